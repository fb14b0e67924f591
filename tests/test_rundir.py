"""The run directory: its layout, what a usable run needs, the label vocabulary, ``latest``."""

from __future__ import annotations

import json
import os
import time

import pytest

from translate.runs.checkpoint import CheckpointError, save_checkpoint
from translate.runs.rundir import RunDir


def test_run_dir_layout_check_and_latest(tmp_path):
    runs = tmp_path / "runs"
    run = RunDir(runs / "a")
    assert not run.root.exists()  # constructing touches nothing
    with pytest.raises(CheckpointError, match="does not exist"):
        run.check_complete()
    run.create()
    with pytest.raises(CheckpointError) as err:
        run.check_complete()
    for part in ("config.yaml", "tokenizer/", "checkpoint"):
        assert part in str(err.value)
    run.config_path.write_text("training: {}\n")
    (run.tokenizer_dir / "spm.model").write_bytes(b"x")
    with pytest.raises(CheckpointError) as err:
        run.check_complete()
    assert "checkpoint" in str(err.value) and "config.yaml" not in str(err.value)
    save_checkpoint(run.last_path, {"step": 1})
    save_checkpoint(run.best_path, {"step": 1})
    run.check_complete()
    assert run.default_checkpoint() == run.best_path

    # latest: the run with the newest checkpoint wins; runs without checkpoints never do
    b = RunDir(runs / "group" / "b").create()
    save_checkpoint(b.last_path, {"step": 2})
    t = time.time()
    os.utime(run.last_path, (t - 100, t - 100))
    os.utime(run.best_path, (t - 100, t - 100))
    os.utime(b.last_path, (t, t))
    (runs / "c").mkdir()
    (runs / "c" / "train.log").write_text("newer but no weights")
    assert RunDir.latest(runs) == b.root
    os.utime(run.best_path, (t + 10, t + 10))
    assert RunDir.latest(runs) == run.root
    with pytest.raises(CheckpointError, match="no run with a checkpoint"):
        RunDir.latest(runs / "c")


def test_labels_have_one_file_and_old_runs_still_read(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.read_labels() is None  # not prepared yet: prepare will write them
    run.write_labels(["it", "law", "médecine"])
    assert run.read_labels() == ["it", "law", "médecine"]
    assert json.loads(run.labels_path.read_text(encoding="utf-8")) == {
        "labels": ["it", "law", "médecine"]}
    assert run.legacy_thresholds() is None  # thresholds live in the checkpoints
    # Run directories written before every checkpoint carried its thresholds
    run.labels_path.write_text('{"labels": ["a", "b"], "thresholds": [0.3, 0.7]}',
                               encoding="utf-8")
    assert run.read_labels() == ["a", "b"]
    assert run.legacy_thresholds() == [0.3, 0.7]
    for bad in ('{"labels": "it"}', '{"thresholds": [0.5]}', '{"labels": [], "thresholds": 1}',
                "[1]", "not json"):
        run.labels_path.write_text(bad, encoding="utf-8")
        with pytest.raises(CheckpointError, match="labels.json: unreadable labels file"):
            run.read_labels()
        with pytest.raises(CheckpointError, match="labels.json: unreadable labels file"):
            run.legacy_thresholds()
