"""torchrun DDP on the CPU (gloo) with real processes and real data.

Two ranks that each run one micro-batch per step must end where one process accumulating
the same two micro-batches ends; rank 0 alone writes the run; a SIGTERM sent to one rank
stops both at one checkpoint, and resuming it reaches the uninterrupted run's weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_train import _small

from conftest import ROOT
from translate import config
from translate.runs.checkpoint import load_checkpoint
from translate.training.distributed import Rank, from_env, shard
from translate.training.prefetch import Prefetcher
from translate.training.trainer import Trainer

STEPS = 10
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "translate.train"]


def _ddp_config(multi30k, multidomain, tmp: Path, name: str, accum: int, steps: int) -> dict:
    raw = _small(multi30k, multidomain, tmp, name, max_steps=steps, valid_every=100000,
                 max_epochs=0, accum_steps=accum, save_every_minutes=0)
    raw["logging"]["log_every"] = 1
    raw["model"]["dropout"] = 0.0  # one process's dropout stream cannot match two ranks'
    raw["data"]["test"] = []
    for source in raw["data"]["valid"]:
        source["max_pairs"] = 5  # the end of a run validates: keep it short
    return raw


def _write(raw: dict, tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def ddp_run(multi30k, multidomain, tmp_path_factory) -> tuple[Path, str, Path]:
    """One uninterrupted 2-rank run: (its run directory, its stdout, the temp root)."""
    tmp = tmp_path_factory.mktemp("ddp")
    raw = _ddp_config(multi30k, multidomain, tmp, "ddp", accum=1, steps=STEPS)
    proc = subprocess.run(TORCHRUN + ["--config", str(_write(raw, tmp, "ddp"))], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "ddp", proc.stdout, tmp


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_ranks_equal_one_process_accumulating_and_rank0_alone_writes(
        ddp_run, multi30k, multidomain) -> None:
    run, stdout, tmp = ddp_run
    single = _ddp_config(multi30k, multidomain, tmp, "single", accum=2, steps=STEPS)
    Trainer(config.from_dict(single)).fit()
    a, b = load_checkpoint(run / "last.pt"), load_checkpoint(tmp / "single" / "last.pt")
    assert a["progress"]["step"] == b["progress"]["step"] == STEPS
    assert a["progress"]["batch_in_epoch"] == b["progress"]["batch_in_epoch"] == 2 * STEPS
    assert a["progress"]["tokens"] == b["progress"]["tokens"]  # the same micro-batches
    assert _max_diff(a["model"], b["model"]) <= 1e-5
    # One writer: the same files as the single process, every step logged once, one summary.
    names = {p.relative_to(run).as_posix() for p in run.rglob("*")}
    assert names == {p.relative_to(tmp / "single").as_posix()
                     for p in (tmp / "single").rglob("*")}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == list(range(1, STEPS + 1))
    # the padding share of a step's micro-batches, summed over ranks as one process counts it
    single_records = [json.loads(line) for line in
                      (tmp / "single" / "metrics.jsonl").read_text().splitlines()]
    pads = [r["train/padding"] for r in records if "train/padding" in r]
    assert pads and pads == pytest.approx(
        [r["train/padding"] for r in single_records if "train/padding" in r], abs=1e-9)
    assert stdout.count('"run_dir"') == 1
    log = (run / "train.log").read_text(encoding="utf-8")
    assert log.count("run directory:") == 1
    # the log and summary.json say that two ranks trained (the single process: world_size 1)
    assert log.count(" INFO distributed: ") == 1
    assert ("distributed: 2 ranks (gloo), global batch = 2 x 1 x 400 tokens = 800 tokens "
            "(ranks x accum_steps x max_tokens)") in log
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    single_summary = json.loads((tmp / "single" / "summary.json").read_text(encoding="utf-8"))
    assert single_summary["world_size"] == 1 and single_summary["backend"] is None
    assert "distributed:" not in (tmp / "single" / "train.log").read_text(encoding="utf-8")
    assert len(a["rng_ranks"]) == 2 and a["world_size"] == 2
    # ranks draw different dropout streams
    assert not torch.equal(a["rng_ranks"][0]["torch"], a["rng_ranks"][1]["torch"])


def _rank_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of torchrun's workers, read from their environment."""
    out = {}
    for pid in subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True,
                              text=True).stdout.split():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"RANK="):
                out[int(item[5:])] = int(pid)
    return out


def test_sigterm_on_one_rank_stops_both_and_resume_matches(ddp_run, multi30k,
                                                           multidomain) -> None:
    reference, _, tmp = ddp_run
    raw = _ddp_config(multi30k, multidomain, tmp, "stopped", accum=1, steps=1000)
    run = tmp / "stopped"
    proc = subprocess.Popen(TORCHRUN + ["--config", str(_write(raw, tmp, "stopped"))],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not ((run / "metrics.jsonl").is_file()
                   and (run / "metrics.jsonl").read_text().count("train/loss") >= 2):
            assert proc.poll() is None and time.time() < deadline, "the run did not start"
            time.sleep(0.05)
        ranks = _rank_pids(proc.pid)
        os.kill(ranks[1], signal.SIGTERM)  # rank 1 only: rank 0 must learn it and save
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Resume with:" in out + err and "torchrun --nproc_per_node=2" in out + err
    stopped = load_checkpoint(run / "last.pt")["progress"]["step"]
    assert 2 <= stopped < STEPS
    resumed = subprocess.run(TORCHRUN + ["--resume", str(run), "--set",
                                         f"training.max_steps={STEPS}"],
                             cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_checkpoint(reference / "last.pt"), load_checkpoint(run / "last.pt")
    assert b["progress"]["step"] == STEPS
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_shard_is_disjoint_and_every_rank_gets_a_batch() -> None:
    group = [[1, 2], [3], [4, 5], [6]]
    two = [shard(group, Rank(r, 2)) for r in range(2)]
    assert [b for share in two for b, real in share if real] == [[1, 2], [4, 5], [3], [6]]
    # a short last group: rank 2 runs a batch with weight 0 so it joins the all-reduce
    assert shard([[7]], Rank(2, 3)) == [([7], False)]
    assert from_env({}) == Rank() and from_env({"WORLD_SIZE": "1", "RANK": "0"}) == Rank()
    assert from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Rank(3, 4, 1)


def test_prefetcher_gives_the_asked_batches_and_skips_dropped_ones() -> None:
    order = [[i, i + 1] for i in range(0, 20, 2)]
    pre = Prefetcher(iter(order), lambda ix: sum(ix), depth=2)
    try:
        assert pre.get([0, 1]) == 1
        assert pre.get([4, 5]) == 9  # [2, 3] was never asked for (a step cut short)
        with pytest.raises(RuntimeError, match="not in the order"):
            pre.get([99])
    finally:
        pre.close()
    failing = Prefetcher(iter(order), lambda ix: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.get([0, 1])
    failing.close()
