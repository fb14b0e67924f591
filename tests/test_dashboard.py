"""The W&B dashboard, read back from the offline run's own files.

A real tiny training run logs offline; the test reads the ``run-<id>.wandb`` files wandb
wrote (its record framing, decoded with wandb's own protobuf ``Record``) and checks what a
person would find on the dashboard: one run across a resume with no step twice, the metric
layout, the sample and test tables, the domain-tag charts and the model artifact.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_config
from translate import config
from translate.config import LoggingConfig
from translate.infer import main as infer_main
from translate.inference.translator import Translator
from translate.runs.rundir import RunDir
from translate.tracking.dashboard import (
    confusion_pairs,
    confusion_rows,
    extremes,
    pr_points,
    sample_indices,
    sentence_chrf,
)
from translate.tracking.tracker import Tracker
from translate.training.trainer import Trainer

_BLOCK, _HEADER = 32768, 7  # wandb's .wandb framing: LevelDB log blocks, 7-byte headers


def read_records(path: Path) -> list:
    """Every record of one finished ``run-<id>.wandb`` file, as wandb's protobuf ``Record``s.

    wandb's service process writes the file on its own thread and may still be flushing it
    when ``finish()`` has returned, so this waits (a few seconds at most) for the run's
    ``exit`` record.
    """
    deadline = time.monotonic() + 15
    while True:
        records = _records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{path}: no exit record"
        time.sleep(0.2)


def _records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if len(data) < 7:
        return []
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    pos, parts, out = 7, b"", []
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0:  # zero-filled rest of a block
            pos += left
            continue
        if pos + _HEADER + length > len(data):  # still being written
            break
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        parts = chunk if kind in (1, 2) else parts + chunk  # FULL/FIRST start a record
        if kind in (1, 4):  # FULL or LAST ends it
            record = pb.Record()
            record.ParseFromString(parts)
            out.append(record)
    return out


def segments(run: Path) -> list[list]:
    """Records of each offline process of the run, in start order."""
    folders = sorted((run / "wandb").glob("offline-run-*"))
    return [read_records(next(f.glob("run-*.wandb"))) for f in folders]


def of_kind(records: list, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def history(records: list) -> list[dict]:
    return [{"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in h.item}
            for h in of_kind(records, "history")]


def summary(records: list) -> dict:
    out: dict = {}
    for s in of_kind(records, "summary"):
        for u in s.update:
            out["/".join(u.nested_key) or u.key] = json.loads(u.value_json)
    return out


def _raw(multi30k, multidomain, run: Path, cache: Path, **training) -> dict:
    raw = tiny_config(multi30k, multidomain, run, cache, **training)
    for group, n in (("train", 400), ("valid", 20), ("test", 20)):
        for source in raw["data"][group]:
            source["max_pairs"] = n
    raw["tokenizer"]["vocab_size"] = 400
    raw["training"].update({"max_tokens": 400, "warmup_steps": 5, "valid_every": 10,
                            "num_samples": 4})
    raw["logging"].update({"wandb": "offline", "log_every": 5, "test_sentences": 3})
    return raw


@pytest.fixture(scope="module")
def offline_run(multi30k, multidomain, tmp_path_factory) -> Path:
    """Three processes of one run: 20 steps; resumed to 30; killed after 30 with its last
    save at step 20 and resumed to 40, so steps 21-30 are trained and logged again."""
    root = tmp_path_factory.mktemp("dash")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("HOME", str(root))  # no credentials, no wandb settings of the host
    mp.delenv("WANDB_API_KEY", raising=False)
    try:
        run = root / "run"
        Trainer(config.from_dict(_raw(multi30k, multidomain, run, root / "cache",
                                      max_steps=20))).fit()
        shutil.copy(run / "last.pt", root / "last-20.pt")
        for steps in (30, 40):
            time.sleep(1.05 - time.time() % 1)  # wandb names offline folders by the second
            cfg = config.from_dict(_raw(multi30k, multidomain, run, root / "cache",
                                        max_steps=steps))
            Trainer(cfg, resume=True).fit()
            shutil.copy(root / "last-20.pt", run / "last.pt")  # the "kill" after step 30
    finally:
        mp.undo()
    return run


def test_resumed_run_is_one_run_with_each_step_once(offline_run: Path) -> None:
    parts = segments(offline_run)
    assert len(parts) == 3
    runs = [of_kind(p, "run")[0] for p in parts]
    assert {r.run_id for r in runs} == {RunDir(offline_run).read_wandb_id()}
    assert [r.resume for r in runs] == [False, True, True]  # wandb sync appends them
    steps = [row["_step"] for p in parts for row in history(p)]
    assert steps == sorted(set(steps)), steps  # increasing, none twice
    assert steps == [5, 10, 15, 20, 25, 30, 35, 40]
    local = sorted({json.loads(line)["step"] for line in
                    (offline_run / "metrics.jsonl").read_text().splitlines()})
    assert local == steps  # nothing missing either
    rows = [row for p in parts for row in history(p)]
    assert all(row["train/step"] == row["_step"] for row in rows)
    train = [row for row in rows if "train/loss" in row]
    for key in ("train/lr", "train/grad_norm", "train/tokens_per_s", "train/padding",
                "train/skipped_steps"):
        assert all(key in row for row in train), key
    assert all(0.0 <= row["train/padding"] < 1.0 for row in train)


def test_metric_layout_and_summaries(offline_run: Path) -> None:
    first = segments(offline_run)[0]
    metrics = {m.name or m.glob_name: m for m in of_kind(first, "metric")}
    assert metrics["train/step"].options.hidden
    for key in ("valid/loss", "train/*", "valid/bleu/*", "valid/f1/*", "valid/ap/*"):
        assert metrics[key].step_metric == "train/step", key
    assert metrics["valid/bleu"].summary.max and metrics["valid/loss"].summary.min
    globs = {m.glob_name for m in of_kind(first, "metric") if m.glob_name}
    # no key may match two globs (wandb would pick one at random)
    assert globs == {"valid/bleu/*", "valid/chrf/*", "valid/f1/*", "valid/ap/*", "train/*",
                     "test/*"}
    valid = [row["valid/bleu"] for p in segments(offline_run) for row in history(p)
             if "valid/bleu" in row]
    last = summary(segments(offline_run)[-1])
    assert last["valid/bleu"] == {"max": max(valid[2:])}  # the resumed process's best


def _table(run: Path, key: str) -> dict:
    """The last logged W&B table ``key`` of the run (its JSON file in the run's media)."""
    files = sorted((run / "wandb").glob(f"offline-run-*/files/media/table/{key}_*.table.json"),
                   key=lambda p: int(p.name.rsplit("_", 2)[-2]))
    assert files, key
    return json.loads(files[-1].read_text())


def test_sample_table_follows_the_same_sentences(offline_run: Path) -> None:
    table = _table(offline_run, "valid/samples")
    assert table["columns"] == ["step", "index", "source", "reference", "hypothesis", "chrf"]
    rows = [dict(zip(table["columns"], r, strict=True)) for r in table["data"]]
    assert sorted({r["step"] for r in rows}) == [10, 20, 30, 40]  # every validation, once
    by_step = {s: [r["index"] for r in rows if r["step"] == s] for s in (10, 20, 30, 40)}
    assert len({tuple(v) for v in by_step.values()}) == 1  # the same sentences each time
    assert by_step[10] == sample_indices(40, 4) == [0, 10, 20, 30]  # both domains
    for r in rows:
        assert r["chrf"] == sentence_chrf([r["hypothesis"]], [r["reference"]])[0]


def test_test_extremes_tag_charts_and_model_artifact(offline_run: Path, tmp_path) -> None:
    worst = _table(offline_run, "test/worst_sentences")
    best = _table(offline_run, "test/best_sentences")
    column = worst["columns"].index("chrf")
    assert len(worst["data"]) == len(best["data"]) == 3
    assert max(r[column] for r in worst["data"]) <= min(r[column] for r in best["data"])
    pr = _table(offline_run, "valid/pr_curves_table")
    assert pr["columns"] == ["label", "threshold", "precision", "recall"]
    assert {r[0] for r in pr["data"]} == {"captions", "general"}
    confusion = _table(offline_run, "valid/domain_confusion_table")
    assert sum(r[2] for r in confusion["data"]) == 40  # every validation row has one domain

    artifacts = [a for p in segments(offline_run) for a in of_kind(p, "artifact")
                 if a.type == "model"]
    assert len(artifacts) == 3  # one per process; identical content keeps one version
    art = artifacts[-1]
    assert art.name == f"model-{RunDir(offline_run).read_wandb_id()}"
    assert sorted(art.aliases) == ["best", "latest"]
    paths = {c.path: c.size for c in art.manifest.contents}
    assert {"best.pt", "config.yaml", "labels.json", "wandb_artifact.json"} <= set(paths)
    assert any(p.startswith("tokenizer/") and p.endswith(".model") for p in paths)
    assert "last.pt" not in paths
    assert paths["best.pt"] == (offline_run / "best.pt").stat().st_size
    assert "wandb: model artifact" in (offline_run / "train.log").read_text()

    # The artifact's layout is a run directory: a copy of exactly its files translates.
    folder = _artifact_folder(offline_run, tmp_path / "artifact")
    got = Translator.load(folder, device="cpu").translate(["Ein Hund läuft."])
    want = Translator.load(offline_run, device="cpu").translate(["Ein Hund läuft."])
    assert got[0].text == want[0].text


def _artifact_folder(run: Path, folder: Path) -> Path:
    """The files of the run's last model artifact (its manifest), copied as W&B would
    download them."""
    art = [a for p in segments(run) for a in of_kind(p, "artifact") if a.type == "model"][-1]
    for entry in art.manifest.contents:
        (folder / entry.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / entry.path, folder / entry.path)
    return folder


def test_infer_wandb_logs_an_evaluation_run(offline_run, multi30k, tmp_path, monkeypatch,
                                            capsys) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    model = _artifact_folder(offline_run, tmp_path / "model")  # as fetched from W&B
    src, ref, doms = tmp_path / "src.de", tmp_path / "ref.en", tmp_path / "ref.domains"
    src.write_text("".join((multi30k / "val.de").open().readlines()[:12]))
    refs = (multi30k / "val.en").open().readlines()[:12]
    ref.write_text("".join(refs))
    doms.write_text("captions\n" * 8 + "other\n" * 3 + "\n")
    with pytest.raises(SystemExit) as done:
        infer_main(["--model", str(model), "--input", str(src), "--reference", str(ref),
                    "--reference-domains", str(doms), "--wandb", "--beam", "1",
                    "--output", str(tmp_path / "hyp.en")])
    assert done.value.code == 0
    assert "upload it with: wandb sync" in capsys.readouterr().err
    (folder,) = (model / "wandb").glob("offline-run-*")
    records = read_records(next(folder.glob("run-*.wandb")))
    (run,) = of_kind(records, "run")
    assert run.job_type == "eval"
    cfg = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert cfg["model_artifact"] == f"model-{RunDir(offline_run).read_wandb_id()}"
    assert cfg["search"]["beam_size"] == 1
    got = summary(records)
    assert got["eval/lines"] == 12 and got["eval/bleu_signature"].startswith("nrefs:1")
    assert set(got) >= {"eval/bleu", "eval/chrf", "eval/bleu/captions", "eval/chrf/other"}
    hyps = (tmp_path / "hyp.en").read_text().splitlines()
    table = json.loads(next(folder.glob("files/media/table/eval/sentences_*.json")).read_text())
    assert [r[4] for r in table["data"]] == sentence_chrf(hyps, [r.strip() for r in refs])
    domains = json.loads(next(folder.glob("files/media/table/eval/domains_*.json")).read_text())
    assert [r[:2] for r in domains["data"]] == [["captions", 8], ["other", 3]]


def test_per_domain_keys_keep_their_best_and_a_failing_call_stops_only_wandb(
        tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))
    run_dir = RunDir(tmp_path / "run")
    tracker = Tracker(LoggingConfig(project="translate-tests"), run_dir, config={})
    for step, value in ((10, 5.0), (20, 7.0), (30, 6.0)):  # per-domain keys
        tracker.log({"valid/bleu/captions": value, "valid/f1/general": value / 10,
                     "valid/loss": value}, step)
    tracker.wandb.run.finish()  # W&B breaks under the tracker's feet
    with caplog.at_level(logging.WARNING, logger="translate.tracking.tracker"):
        tracker.log({"valid/loss": 1.0}, 40)
        tracker.log({"valid/loss": 0.5}, 50)
    assert not tracker.active and caplog.text.count("W&B logging stops") == 1
    assert [json.loads(x)["step"] for x in run_dir.metrics_path.read_text().splitlines()] == [
        10, 20, 30, 40, 50]  # the local log goes on
    tracker.finish()
    (folder,) = (run_dir.root / "wandb").glob("offline-run-*")
    got = summary(read_records(next(folder.glob("run-*.wandb"))))
    assert got["valid/bleu/captions"] == {"max": 7.0}
    assert got["valid/f1/general"] == {"max": 0.7}
    assert got["valid/loss"] == {"min": 5.0}


def test_dashboard_numbers_on_known_cases() -> None:
    assert sample_indices(5, 10) == [0, 1, 2, 3, 4] and sample_indices(0, 3) == []
    assert sample_indices(100, 4) == [0, 25, 50, 75]
    hyps, refs = ["a dog runs", "xyz", "a cat"], ["a dog runs", "a man sings", "a cat sits"]
    assert sentence_chrf(hyps[:1], refs[:1]) == [100.0]
    worst, best = extremes(["s1", "s2", "s3"], refs, hyps, 1)
    assert worst[0]["index"] == 1 and best[0]["index"] == 0
    # scores 0.9 (pos), 0.8 (neg), 0.4 (pos): thresholds at every distinct score
    assert pr_points(np.array([0.9, 0.8, 0.4]), np.array([1, 0, 1])) == [
        (0.9, 1.0, 0.5), (0.8, 0.5, 0.5), (0.4, 0.6667, 1.0)]
    assert pr_points(np.array([0.3]), np.array([0])) == []  # no positives: no curve
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.5, 0.5]])
    gold = np.array([[1, 0], [0, 1], [0, 1], [1, 1]])  # the last row has two: left out
    g, p = confusion_pairs(probs, gold)
    assert (g, p) == ([0, 1, 1], [0, 1, 0])
    assert confusion_rows(g, p, ["a", "b"]) == [["a", "a", 1], ["a", "b", 0],
                                               ["b", "a", 1], ["b", "b", 1]]


def test_disabled_training_writes_nothing_of_wandb(offline_run, multi30k, multidomain,
                                                   tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    raw = _raw(multi30k, multidomain, tmp_path / "run", offline_run.parent / "cache",
               max_steps=5)
    Trainer(config.from_dict(raw)).fit()
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert not names & {"wandb", "wandb_id", "wandb_artifact.json"}
    assert not (tmp_path / "wandb").exists()


def test_artifacts_off_logs_no_model_artifact(offline_run, multi30k, multidomain, tmp_path,
                                              monkeypatch) -> None:
    """``logging.artifacts: false``: an offline run with metrics but no model artifact."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    raw = _raw(multi30k, multidomain, tmp_path / "run", offline_run.parent / "cache",
               max_steps=5)
    raw["logging"]["artifacts"] = False
    Trainer(config.from_dict(raw)).fit()
    records = [r for p in segments(tmp_path / "run") for r in p]
    assert history(records), "the run logged no metrics at all"
    kinds = {a.type for a in of_kind(records, "artifact")}
    assert "run_table" in kinds and "model" not in kinds  # tables are logged, the model not
    assert "wandb: model artifact" not in (tmp_path / "run" / "train.log").read_text()
    assert not (tmp_path / "run" / "wandb_artifact.json").exists()
