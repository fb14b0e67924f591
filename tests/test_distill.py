"""Sequence-level distillation (python -m translate.distill) with a real tiny teacher: the
translate stage keeps every line, empty ones and labels included, and a kill -9 followed by a
restart gives exactly the corpus of an uninterrupted run; a teacher -> student run end to end
whose student loads in Translator and decodes."""

from __future__ import annotations

import filecmp
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, tiny_config
from translate import config
from translate.distill import pipeline, student
from translate.distill.store import DistillError, Store
from translate.inference.translator import Translator
from translate.runs.rundir import RunDir


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def _sources(multi30k: Path, multidomain: Path, tmp: Path) -> tuple[Path, list[str]]:
    """A captions source with empty and whitespace-only lines among real ones."""
    de = _lines(multi30k / "val.de")[:60]
    en = _lines(multi30k / "val.en")[:60]
    for i in (0, 17, 18, 59):
        de[i] = "" if i != 18 else "   "
    prefix = tmp / "captions"
    prefix.with_suffix(".de").write_text("".join(s + "\n" for s in de), encoding="utf-8")
    prefix.with_suffix(".en").write_text("".join(s + "\n" for s in en), encoding="utf-8")
    return prefix, de


def _student_raw(multi30k: Path, multidomain: Path, tmp: Path, name: str,
                 captions: Path) -> dict:
    raw = tiny_config(multi30k, multidomain, tmp / name, tmp / "cache", max_steps=40,
                      valid_every=40, valid_max_sentences=100)
    raw["data"]["train"] = [
        {"kind": "text", "prefix": str(captions), "domains": ["captions"]},
        {"kind": "text", "prefix": str(multidomain / "general" / "dev"), "domains": ["general"],
         "max_pairs": 340},
    ]
    raw["model"]["tagger"]["enabled"] = True
    raw["distill"] = {"chunk_lines": 25, "beam_size": 2, "output": str(tmp / f"{name}-corpus")}
    return raw


def _published(out: Path) -> dict[tuple[str, ...], tuple[list[str], list[str]]]:
    groups = Store(out).groups()
    return {tuple(g.domains): (_lines(Path(f"{g.prefix}.de")), _lines(Path(f"{g.prefix}.en")))
            for g in groups}


def test_translate_keeps_lines_labels_and_resumes_exactly_after_kill9(
        trained_run, multi30k, multidomain, tmp_path) -> None:
    captions, de = _sources(multi30k, multidomain, tmp_path)
    general = _lines(multidomain / "general" / "dev.de")[:340]
    # uninterrupted
    whole = _student_raw(multi30k, multidomain, tmp_path, "whole", captions)
    out = pipeline.run(trained_run, config.from_dict(whole), stage="translate")
    assert [g["rows"] for g in out["groups"]] == [60, 340]
    corpus = _published(Path(whole["distill"]["output"]))
    assert set(corpus) == {("captions",), ("general",)}
    src, hyp = corpus[("captions",)]
    assert src == de  # one line per input line, as it was
    assert [i for i, h in enumerate(hyp) if not h] == [0, 17, 18, 59]  # empty in, empty out
    assert all(hyp[i] for i in range(60) if de[i].strip())
    assert corpus[("general",)][0] == general
    assert not (Path(whole["distill"]["output"]) / "chunks").exists()  # published, then gone

    # killed after its first chunks, then run again
    raw = _student_raw(multi30k, multidomain, tmp_path, "killed", captions)
    cfg_path = tmp_path / "killed.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    store = Store(raw["distill"]["output"])
    with open(tmp_path / "killed.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "translate.distill", "--teacher",
                                 str(trained_run), "--config", str(cfg_path), "--stage",
                                 "translate"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.time() + 120
        while not store.has_chunk(1):
            assert proc.poll() is None, (tmp_path / "killed.err").read_text()
            assert time.time() < deadline, "no chunk written"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    kept = {p.name: p.stat().st_mtime_ns for p in store.chunks_dir.glob("*.jsonl")}
    assert 2 <= len(kept) < 16 and not store.read_manifest()["complete"]
    # the restart writes only the missing chunks (the kept ones stay untouched) ...
    seen = {}
    real_write = Store.write_chunk

    def spy(self, k, *args):
        seen[k] = self.has_chunk(k)
        return real_write(self, k, *args)

    Store.write_chunk = spy
    try:
        pipeline.run(trained_run, config.from_dict(raw), stage="translate")
    finally:
        Store.write_chunk = real_write
    assert sorted(seen) == [k for k in range(16) if f"{k:06d}.jsonl" not in kept]
    assert not any(seen.values())
    # ... and the corpus is byte for byte the uninterrupted one
    for g_whole, g_killed in zip(Store(whole["distill"]["output"]).groups(), store.groups(),
                                 strict=True):
        for lang in ("de", "en"):
            assert filecmp.cmp(f"{g_whole.prefix}.{lang}", f"{g_killed.prefix}.{lang}",
                               shallow=False)

    # a restart with another teacher search is refused, naming what changed
    raw["distill"]["beam_size"] = 3
    with pytest.raises(DistillError, match=r"other settings \(search differ\)"):
        pipeline.run(trained_run, config.from_dict(raw), stage="translate")


def test_teacher_to_student_end_to_end(trained_run, multi30k, multidomain, tmp_path) -> None:
    captions, _ = _sources(multi30k, multidomain, tmp_path)
    raw = _student_raw(multi30k, multidomain, tmp_path, "student", captions)
    # a student of another shape than the teacher, asking for another tokenizer (replaced)
    raw["model"].update(emb_dim=48, enc_hidden=48, dec_hidden=96)
    raw["tokenizer"] = {"vocab_size": 500, "max_tokens": 64}
    raw["inference"]["beam_size"] = 1
    cfg = config.from_dict(raw)
    out = pipeline.run(trained_run, cfg, stage="all")
    run = RunDir(raw["training"]["run_dir"])
    assert out["summary"]["step"] == 40, out["summary"]
    # the teacher's tokenizer, byte for byte, so both share one vocabulary
    for f in RunDir(trained_run).tokenizer_dir.iterdir():
        assert filecmp.cmp(f, run.tokenizer_dir / f.name, shallow=False), f.name
    saved = config.load(run.config_path)
    assert saved.tokenizer == config.load(RunDir(trained_run).config_path).tokenizer
    assert [s.prefix for s in saved.data.train] == [str(g.prefix) for g in
                                                     Store(raw["distill"]["output"]).groups()]
    assert json.loads(run.labels_path.read_text())  # the tagging head kept its labels
    student_tr = Translator.load(run.root, device="cpu")
    assert student_tr.model.encoder is not None
    texts = ["Ein Hund rennt über die Wiese.", "", "Zwei Männer spielen Fußball."]
    results = student_tr.translate(texts)  # greedy: the student's inference.beam_size
    assert [bool(r.text) for r in results] == [True, False, True]
    assert student_tr.options().beam_size == 1
    # the shortlist the trainer learnt, and int8, work on a student unchanged
    assert run.shortlist_path.is_file() and results[0].scores_over == "shortlist"
    int8 = Translator.load(run.root, device="cpu", quantize=True)
    assert [bool(r.text) for r in int8.translate(texts)] == [True, False, True]
    assert sum(p.numel() for p in student_tr.model.parameters()) < sum(
        p.numel() for p in Translator.load(trained_run, device="cpu").model.parameters())
    # the train stage alone refuses the finished run unless told to resume or overwrite
    with pytest.raises(Exception, match="holds an earlier run"):
        pipeline.run(trained_run, cfg, stage="train")
    # keep_references: the original sources follow the distilled ones
    keep = config.from_dict({**raw, "distill": {**raw["distill"], "keep_references": True}})
    both = student.student_config(keep, config.load(RunDir(trained_run).config_path),
                                  Store(raw["distill"]["output"]).groups())
    assert [s.prefix for s in both.data.train][2:] == [s["prefix"] for s in
                                                        raw["data"]["train"]]


def test_refusals_name_what_to_do(trained_run, multi30k, multidomain, tmp_path) -> None:
    captions, _ = _sources(multi30k, multidomain, tmp_path)
    raw = _student_raw(multi30k, multidomain, tmp_path, "student", captions)
    with pytest.raises(DistillError, match="run the translate stage first"):
        pipeline.run(trained_run, config.from_dict(raw), stage="train")
    with pytest.raises(config.ConfigError, match="is the teacher's run directory"):
        pipeline.run(trained_run, config.from_dict(
            {**raw, "training": {**raw["training"], "run_dir": str(trained_run)}}))
    swapped = {**raw, "data": {**raw["data"], "src_lang": "en", "tgt_lang": "de"}}
    with pytest.raises(config.ConfigError, match="translates de -> en, the student config en"):
        pipeline.run(trained_run, config.from_dict(swapped))
    with pytest.raises(config.ConfigError, match="--resume continues the student's training"):
        pipeline.run(trained_run, config.from_dict(raw), stage="translate", resume=True)
    assert not Path(raw["distill"]["output"]).exists()  # nothing was written


def test_closest_picks_the_hypothesis_nearest_the_reference() -> None:
    import sacrebleu

    from translate.distill.teacher import closest

    ref = "A man in a blue shirt is standing on a ladder cleaning windows."
    nbest = [("A man is standing on a ladder.", -1.0),
             ("A man in a blue shirt stands on a ladder cleaning windows.", -1.4),
             ("A man in a blue shirt stands on a ladder cleaning windows.", -1.6),
             ("A person cleans.", -2.0)]
    assert closest(nbest, ref) == nbest[1][0]  # the tie goes to the higher-scoring one
    assert sacrebleu.sentence_bleu(nbest[1][0], [ref]).score > sacrebleu.sentence_bleu(
        nbest[0][0], [ref]).score
    assert closest(nbest, "") == closest(nbest, "  ") == nbest[0][0]  # nothing to be close to
    assert closest([], ref) == ""


def test_select_closest_writes_one_of_the_teachers_nbest(trained_run, multi30k, multidomain,
                                                         tmp_path) -> None:
    """distill.select: closest keeps one line per input (empty ones empty), each the n-best
    hypothesis nearest its reference: where the reference is the teacher's second
    hypothesis, that one is written instead of its best, elsewhere the best."""
    captions, de = _sources(multi30k, multidomain, tmp_path)
    teacher = Translator.load(trained_run, device="cpu")
    nbests = [[t for t, _ in r.nbest] for r in teacher.translate(de, beam=3, n_best=3,
                                                                  batch_size=64)]
    refs = _lines(captions.with_suffix(".en"))
    second = {i: n[1] for i, n in enumerate(nbests) if len(n) > 1 and n[1] != n[0]}
    assert len(second) >= 10
    for i, nbest in enumerate(nbests):  # the rest: the top one is the reference
        refs[i] = second.get(i, nbest[0] if nbest else refs[i])
    captions.with_suffix(".en").write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    raw = _student_raw(multi30k, multidomain, tmp_path, "closest", captions)
    raw["data"]["train"] = raw["data"]["train"][:1]
    raw["distill"].update(select="closest", beam_size=3)
    pipeline.run(trained_run, config.from_dict(raw), stage="translate")
    (pair,) = _published(Path(raw["distill"]["output"])).values()
    assert pair[0] == de
    for i, (hyp, nbest) in enumerate(zip(pair[1], nbests, strict=True)):
        assert hyp == (second[i] if i in second else nbest[0] if nbest else ""), i


def test_an_ensemble_teaches_a_student_config_that_names_no_data(trained_run, multi30k,
                                                                  tmp_path, capsys) -> None:
    """distill --teacher A --teacher B with a config of only a model and a budget: the
    student takes the teacher's data section (sources, languages, valid sets) and the
    ensemble's translations (here a model with itself: the model's own translations)."""
    from translate.distill.__main__ import main

    out_dir = tmp_path / "corpus"
    student_cfg = {
        "model": {"emb_dim": 32, "enc_hidden": 32, "enc_layers": 1, "dec_hidden": 64,
                  "dec_layers": 1, "share_embeddings": True, "tagger": {"enabled": False}},
        "training": {"run_dir": str(tmp_path / "student"), "device": "cpu", "max_steps": 8,
                     "max_epochs": 0, "valid_every": 8, "valid_max_sentences": 40,
                     "num_threads": 1, "precision": "fp32", "max_tokens": 1500},
        "inference": {"beam_size": 1},
        "distill": {"beam_size": 2, "chunk_lines": 40, "output": str(out_dir)},
        "logging": {"wandb": "disabled"},
    }
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(student_cfg))
    assert main(["--teacher", str(trained_run), "--teacher", str(trained_run), "--config",
                 str(path), "--set", "data.train[0].max_pairs=40",
                 "--set", "data.train[1].max_pairs=20"]) == 0
    out = capsys.readouterr().out  # the trainer's log lines, then the command's JSON
    printed = json.loads(out[out.rfind("\n{\n") + 1:])
    assert [g["rows"] for g in printed["groups"]] == [40, 20]
    assert printed["summary"]["step"] == 8
    teacher_cfg = config.load(RunDir(trained_run).config_path)
    saved = config.load(RunDir(tmp_path / "student").config_path)
    assert (saved.data.src_lang, saved.data.tgt_lang) == ("de", "en")
    assert saved.data.valid == teacher_cfg.data.valid and saved.data.test == teacher_cfg.data.test
    manifest = Store(out_dir).read_manifest()
    assert len(manifest["settings"]["teacher_checkpoint"]) == 2  # both members recorded
    captions = _published(out_dir)[("captions",)]
    assert captions[0] == _lines(multi30k / "train.de")[:40]
    alone = Translator.load(trained_run, device="cpu").translate(captions[0], beam=2)
    assert captions[1] == [r.text for r in alone]
    with pytest.raises(config.ConfigError, match="--teacher .*: an empty run directory name"):
        pipeline.teacher_dirs(f"{trained_run},")
