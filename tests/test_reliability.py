"""Crash safety with real processes: kill -9 and resume, one writer per run, full disks,
progress lines without a terminal."""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import resource
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
from translate.runs.checkpoint import load_checkpoint
from translate.training.trainer import Trainer

PY = [sys.executable, "-m", "translate.train"]


def _train_steps(run: Path) -> list[int]:
    """Steps of the training records in metrics.jsonl (one per logged step)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "train/loss" in r]


def _wait(cond, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_kill9_loses_few_steps_resume_leaves_no_duplicates_and_one_writer(
        multi30k, multidomain, tmp_path) -> None:
    raw = _small(multi30k, multidomain, tmp_path, "run", max_steps=100000, valid_every=100000,
                 save_every_steps=5, save_every_minutes=0)
    raw["logging"]["log_every"] = 1
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    with open(tmp_path / "a.out", "w") as out, open(tmp_path / "a.err", "w") as err:
        first = subprocess.Popen(PY + ["--config", str(cfg)], cwd=ROOT, stdout=out, stderr=err)
    try:
        _wait(lambda: (run / "metrics.jsonl").is_file(), "the first training steps")
        # a second trainer on the same run directory is refused, naming the holder
        second = subprocess.run(PY + ["--config", str(cfg)], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"translate.train: error: {run}: another translate.train (PID {first.pid}) is "
            "writing to this run directory; wait for it to end or choose another "
            "training.run_dir"]
        # kill -9 between two periodic checkpoints (steps 5, 10, ...)
        _wait(lambda: (s := _train_steps(run)) and s[-1] >= 7 and s[-1] % 5 in (2, 3),
              "a step between two checkpoints")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        first.kill()
    killed_at = _train_steps(run)[-1]
    saved = load_checkpoint(run / "last.pt")["progress"]["step"]
    assert saved % 5 == 0 and 0 < killed_at - saved <= 5, (saved, killed_at)
    # stdout is not a TTY: plain progress lines, flushed as they happen (SIGKILL flushes
    # nothing, so these reached the file while the process was running)
    progress = [ln for ln in (tmp_path / "a.out").read_text().splitlines()
                if ln.startswith("step ")]
    assert re.fullmatch(r"step 1/100000: loss \d+\.\d{3}, [\d,]+ tokens/s, ETA \d+:\d\d:\d\d",
                        progress[0]), progress[0]
    assert len(progress) >= killed_at - 1 and "tokens/s" in progress[-1]

    # no stale lock after kill -9; the replayed steps are logged once
    end = killed_at + 5
    resumed = subprocess.run(PY + ["--resume", str(run), "--set", f"training.max_steps={end}"],
                             cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps = _train_steps(run)
    assert steps == list(range(1, end + 1)), [s for s, n in collections.Counter(steps).items()
                                         if n > 1]
    assert f"dropped {killed_at - saved} record(s) after step {saved}" in (
        run / "train.log").read_text()


def _ignore_sigxfsz_and_limit(limit: int):
    def setup() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so the write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return setup


def test_a_new_run_never_starts_over_an_earlier_one(multi30k, multidomain, tmp_path) -> None:
    """Training into a folder that holds a run is refused, naming the three ways on; with
    --overwrite the new run starts from nothing (its own tokenizer, its own metrics)."""
    raw = _small(multi30k, multidomain, tmp_path, "run", max_steps=2, valid_every=100000,
                 save_every_minutes=0)
    Trainer(config.from_dict(raw)).fit()
    run = tmp_path / "run"
    (run / "snapshot-000000001.pt").write_bytes(b"an averaging snapshot")
    (run / "notes.txt").write_text("the user's own file")
    def files() -> dict[str, bytes]:  # the lock file names whoever took it last
        return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()
                and p.name != ".lock"}

    before = files()
    cfg = tmp_path / "run.yaml"
    raw["tokenizer"]["vocab_size"] = 360  # a new setting the old tokenizer would ignore
    cfg.write_text(yaml.safe_dump(raw))

    again = subprocess.run(PY + ["--config", str(cfg)], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines()[-1] == (
        f"translate.train: error: {run}: holds an earlier run (best.pt, last.pt, "
        f"metrics.jsonl, summary.json, ...); continue it with `python -m translate.train "
        f"--resume {run}`, set another training.run_dir, or pass --overwrite to delete it "
        "and start over")
    assert files() == before

    both = subprocess.run(PY + ["--resume", str(run), "--overwrite"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr

    fresh = subprocess.run(PY + ["--config", str(cfg), "--overwrite", "--set",
                                 "training.max_steps=1"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert "--overwrite: deleted the earlier run's" in fresh.stderr
    assert not (run / "snapshot-000000001.pt").exists()
    assert (run / "notes.txt").read_text() == "the user's own file"
    vocab = json.loads((run / "tokenizer" / "tokenizer.json").read_text())
    assert vocab["requested_vocab_size"] == 360
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records and {r["step"] for r in records} == {1}  # the earlier run's are gone
    assert load_checkpoint(run / "last.pt")["progress"]["step"] == 1


def test_failed_checkpoint_write_keeps_the_previous_one(multi30k, multidomain,
                                                        tmp_path) -> None:
    raw = _small(multi30k, multidomain, tmp_path, "full", max_steps=3, valid_every=100000)
    Trainer(config.from_dict(raw)).fit()
    run = tmp_path / "full"
    before = (run / "last.pt").read_bytes()
    limit = len(before) // 2  # the logs stay far below it, a checkpoint does not
    proc = subprocess.run(PY + ["--resume", str(run), "--set", "training.max_steps=6",
                                "--set", "training.save_every_steps=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=_ignore_sigxfsz_and_limit(limit))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr  # INFO records first, then the one-line error
    assert proc.stderr.strip().splitlines()[-1:] == [
        f"translate.train: error: {run / 'last.pt'}: could not write the checkpoint: File too "
        "large (EFBIG); the previous last.pt is unchanged. Free space or raise the limit, "
        "then resume"]
    assert (run / "last.pt").read_bytes() == before
    assert load_checkpoint(run / "last.pt")["progress"]["step"] == 3
    assert not list(run.glob(".*.tmp"))  # no half-written temp file left behind
    assert os.path.getsize(run / "metrics.jsonl") < limit


def test_time_based_checkpoints_between_validations(multi30k, multidomain, tmp_path,
                                                    caplog) -> None:
    caplog.set_level(logging.INFO, logger="translate")
    # 0.0001 minutes: every step is due, so each one rewrites last.pt with its own position
    raw = _small(multi30k, multidomain, tmp_path, "timed", max_steps=4, valid_every=100000,
                 save_every_minutes=0.0001)
    Trainer(config.from_dict(raw)).fit()
    log = (tmp_path / "timed" / "train.log").read_text()
    assert [int(s) for s in re.findall(r"INFO step (\d+): saved \S+last\.pt", log)] == [1, 2, 3]


def test_bad_save_settings_are_refused_naming_the_field(multi30k, multidomain,
                                                        tmp_path) -> None:
    for key, value in (("save_every_minutes", -1), ("save_every_steps", -5)):
        raw = _small(multi30k, multidomain, tmp_path, "bad", **{key: value})
        with pytest.raises(config.ConfigError, match=rf"training\.{key}: .*0 = off"):
            config.from_dict(raw)


def test_progress_lines_every_n_steps_or_after_the_time_limit() -> None:
    from translate.training.progress import ProgressLines

    lines: list[str] = []
    by_steps = ProgressLines(lines.append, every=3, max_minutes=60)
    for step in range(1, 8):
        by_steps.update(step, 2.5, 100)
    assert [ln.split(":")[0] for ln in lines] == ["step 3", "step 6"]
    assert re.fullmatch(r"step 3: loss 2\.500, [\d,]+ tokens/s, ETA 0:59:5\d", lines[0])
    lines.clear()
    by_time = ProgressLines(lines.append, every=1000, max_seconds=0.0)  # no limit: no ETA
    by_time.update(1, 1.0, 10)
    assert len(lines) == 1 and "ETA" not in lines[0]


def test_truncate_logs_cuts_both_logs_and_a_torn_line(tmp_path) -> None:
    from translate.runs.rundir import RunDir

    run = RunDir(tmp_path)
    run.metrics_path.write_text("".join(json.dumps({"step": s, "train/loss": 1.0}) + "\n"
                                        for s in (1, 2, 3, 4)) + '{"step": 5, "tr')
    run.samples_path.write_text("".join(json.dumps({"step": s, "source": "ein Hund"}) + "\n"
                                        for s in (2, 4)))
    run.truncate_logs(3)
    assert _train_steps(tmp_path) == [1, 2, 3]
    assert [json.loads(x)["step"] for x in run.samples_path.read_text().splitlines()] == [2]
    untouched = run.metrics_path.stat().st_mtime_ns
    run.truncate_logs(3)  # nothing to cut: the file is left alone
    assert run.metrics_path.stat().st_mtime_ns == untouched
