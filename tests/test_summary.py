"""summary.json is written when a run starts and kept current, so a run that never reaches
its end still says what it was: processes, backend, device, precision, data, command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_train import _small

from conftest import ROOT
from translate import config
from translate.data import DataError
from translate.runs.rundir import RunDir
from translate.training.trainer import Trainer


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text(encoding="utf-8"))


def test_a_killed_run_leaves_a_summary_of_what_it_was(multi30k, multidomain, tmp_path) -> None:
    """kill -9 while training: no end, no final scores, yet summary.json (written atomically)
    holds the run's world size, backend, device, precision, data, command and progress."""
    raw = _small(multi30k, multidomain, tmp_path, "run", max_steps=100000, valid_every=4,
                 max_epochs=0)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(raw), encoding="utf-8")
    run, log = tmp_path / "run", tmp_path / "stderr.txt"
    with log.open("wb") as err:  # a file, not a pipe nobody reads while it runs
        proc = subprocess.Popen([sys.executable, "-m", "translate.train", "--config", str(cfg),
                                 "--set", "training.lr=0.002",
                                 "--training.label_smoothing=0.05"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "WANDB_MODE": "disabled"})
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while True:  # the statuses it goes through, read as another process would
            assert proc.poll() is None, log.read_text(encoding="utf-8")[-2000:]
            assert time.monotonic() < deadline, f"timed out; saw {seen}"
            if (run / "summary.json").is_file():
                summary = _summary(run)  # never half a file: it is replaced atomically
                if not seen or seen[-1] != summary["status"]:
                    seen.append(summary["status"])
                if summary["step"] >= 8:
                    break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()

    summary = _summary(run)
    assert seen[-1] == "training" and set(seen) <= {"preparing", "training"}
    assert summary["status"] == "training" and "ended" not in summary  # it never ended
    assert summary["world_size"] == 1 and summary["backend"] is None
    assert summary["device"] == "cpu" and summary["precision"] == "float32"
    assert summary["precision_setting"] == "fp32" and summary["threads"] == 1
    assert summary["run_dir"] == str(run)
    assert summary["step"] >= 8 and summary["step"] % 4 == 0  # kept at each validation
    assert summary["best_valid"] is not None and summary["tokens_per_s"] > 0
    assert summary["command"]["config"] == str(cfg.resolve())
    assert summary["command"]["overrides"] == ["training.lr=0.002",
                                               "training.label_smoothing=0.05"]
    data = summary["data"]
    assert (data["src_lang"], data["tgt_lang"]) == ("de", "en")
    assert data["pairs"]["valid"] == 40 and data["pairs"]["test"] == 20
    assert [s["group"] for s in data["sources"]] == [
        "data.train[0]", "data.train[1]", "data.valid[0]", "data.valid[1]", "data.test[0]"]
    assert data["sources"][0]["source"] == f"text:{multi30k / 'train'}"
    assert data["sources"][0]["rows_per_split"] == {"train": 400}
    assert Path(data["cache_path"]).is_dir()
    assert summary["parameters"] > 0 and summary["labels"] == ["captions", "general"]
    assert summary["wandb"] == {"mode": "disabled"}
    assert summary["started"] <= summary["updated"]


def test_a_run_that_fails_on_its_data_says_so_and_leaves_the_folder_free(
        multi30k, multidomain, tmp_path) -> None:
    """The summary exists before the data is read; a run that fails there records the
    error, and the folder (no step taken) stays free for the corrected run."""
    raw = _small(multi30k, multidomain, tmp_path, "run", max_steps=2, valid_every=100000)
    good_prefix = raw["data"]["train"][0]["prefix"]
    raw["data"]["train"][0]["prefix"] = str(tmp_path / "missing")
    with pytest.raises(DataError, match="missing.de"):
        Trainer(config.from_dict(raw))
    run = tmp_path / "run"
    summary = _summary(run)
    assert summary["status"] == "failed" and summary["step"] == 0
    assert summary["error"].startswith("DataError: ") and "missing.de" in summary["error"]
    assert summary["data"]["sources"][0] == {"group": "data.train[0]", "kind": "text",
                                             "prefix": str(tmp_path / "missing"),
                                             "domains": ["captions"], "max_pairs": 400}
    assert summary["command"] is None  # started from Python, not the command line
    assert RunDir(run).trained() == []

    raw["data"]["train"][0]["prefix"] = good_prefix
    final = Trainer(config.from_dict(raw)).fit()  # no --overwrite needed
    summary = _summary(run)
    assert summary["status"] == "finished" and "error" not in summary
    assert summary["step"] == final["step"] == 2 and summary["test_bleu"] == final["test_bleu"]
    assert RunDir(run).trained()  # a finished run: the next one must resume or overwrite


def test_update_summary_merges_and_replaces(tmp_path) -> None:
    run = RunDir(tmp_path / "r")
    run.root.mkdir()
    assert run.read_summary() == {}
    run.update_summary({"status": "preparing", "step": 0})
    assert run.update_summary({"step": 5}) == {"status": "preparing", "step": 5}
    assert run.update_summary({"status": "x"}, replace=True) == {"status": "x"}
    (tmp_path / "r" / "summary.json").write_text("[1, 2]", encoding="utf-8")
    assert run.read_summary() == {} and run.trained() == [run.summary_path]
