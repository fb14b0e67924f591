"""Checkpoints: atomic saves, code-free loads, RNG round trips, averaging."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from translate.runs.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    average_checkpoints,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _model_state(seed: int) -> dict:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    return model.state_dict()


def _training_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict(),
        "step": 1,
        "epoch": 0,
        "batch_in_epoch": 1,
        "rng": capture_rng_state(),
        "config": {"training": {"lr": 1e-3, "betas": [0.9, 0.98]}, "logging": {"entity": None}},
    }


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_full_training_state_round_trips(tmp_path):
    state = _training_state()
    path = tmp_path / "run" / "last.pt"  # parent folder created on demand
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["version"] == CHECKPOINT_VERSION
    assert loaded["step"] == 1 and loaded["batch_in_epoch"] == 1
    assert loaded["config"] == state["config"]
    for key, t in state["model"].items():
        assert torch.equal(loaded["model"][key], t)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    model.load_state_dict(loaded["model"])
    opt.load_state_dict(loaded["optimizer"])
    assert opt.param_groups[0]["betas"] == (0.9, 0.98)
    assert _leftovers(path.parent) == []


def test_rng_state_round_trips_through_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.standard_normal()
    save_checkpoint(tmp_path / "c.pt", {"rng": capture_rng_state()})
    expected = (torch.rand(5), [random.random() for _ in range(5)], random.gauss(0, 1),
                np.random.rand(5), np.random.standard_normal())
    # disturb every generator, then restore from disk
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    got = (torch.rand(5), [random.random() for _ in range(5)], random.gauss(0, 1),
           np.random.rand(5), np.random.standard_normal())
    assert torch.equal(got[0], expected[0])
    assert got[1] == expected[1] and got[2] == expected[2]
    assert np.array_equal(got[3], expected[3]) and got[4] == expected[4]


_FULL_DISK_CHILD = """
import resource, signal, sys
import torch
from translate.runs.checkpoint import save_checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))
try:
    save_checkpoint(sys.argv[1], {"step": 2, "model": {"w": torch.randn(1_000_000)}})
except Exception as err:  # torch turns EFBIG into a RuntimeError while closing the zip
    print(type(err).__name__, err, file=sys.stderr)
    sys.exit(0)
sys.exit(2)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX-only")
def test_write_failing_midway_keeps_old_checkpoint_and_leaves_no_temp_file(tmp_path):
    """A real mid-write failure: the OS refuses bytes past 1 MB of a 4 MB checkpoint."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "model": {"w": torch.ones(2)}})
    before = path.read_bytes()
    child = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CHILD, str(path)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    assert child.returncode == 0, child.stderr
    assert "File too large" in child.stderr or "pos" in child.stderr
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert _leftovers(tmp_path) == []


def test_fsync_failure_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    # a user error (one line naming the file and the cause), not a traceback
    with pytest.raises(CheckpointError, match=r"last\.pt: could not write the checkpoint: "
                       r"No space left on device \(ENOSPC\); the previous last\.pt is unchanged"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert _leftovers(tmp_path) == []


def test_non_plain_data_is_refused_before_writing(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})
    with pytest.raises(CheckpointError, match=r"state\['metrics'\]\['bleu'\]: numpy"):
        save_checkpoint(path, {"step": 2, "metrics": {"bleu": np.float64(30.0)}})
    assert load_checkpoint(path)["step"] == 1
    assert _leftovers(tmp_path) == []

    class Custom(torch.Tensor):
        pass

    with pytest.raises(CheckpointError, match=r"state\['model'\]\['w'\]: .*Custom"):
        save_checkpoint(path, {"model": {"w": torch.zeros(1).as_subclass(Custom)}})


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"version": CHECKPOINT_VERSION, "model": {}, "x": _Payload(marker)}, evil)
    # the payload is real: an unrestricted load would create the marker file
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing to load") as err:
        load_checkpoint(evil)
    assert str(evil) in str(err.value)
    assert "system" in str(err.value)  # names the offending global
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # control: proves the payload would have run
    assert marker.exists()


def test_truncated_and_garbage_files_name_the_file(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {"w": torch.randn(1000)}})
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint\n" * 10)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    what = {truncated: "a zip archive cut short (its directory is missing)",
            garbage: "a text file, starting 'this is not a checkpoint'", empty: "an empty file"}
    for path, looks in what.items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        assert str(err.value) == (f"{path}: corrupt or truncated checkpoint: {looks} "
                                  "(checkpoints are PyTorch zip archives)")
    legacy = tmp_path / "legacy.pt"  # the pre-zip pickle format: refused before unpickling
    torch.save({"version": CHECKPOINT_VERSION}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy.pt: corrupt or truncated checkpoint: "
                                              "not a zip archive"):
        load_checkpoint(legacy)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_version_mismatch_says_which_versions(tmp_path):
    newer = tmp_path / "newer.pt"
    torch.save({"version": CHECKPOINT_VERSION + 1, "model": {}}, newer)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(newer)
    msg = str(err.value)
    assert f"version {CHECKPOINT_VERSION + 1}" in msg and "newer" in msg
    assert f"..{CHECKPOINT_VERSION}" in msg and str(newer) in msg
    plain = tmp_path / "plain_state_dict.pt"
    torch.save({"w": torch.ones(1)}, plain)
    with pytest.raises(CheckpointError, match="not a translate checkpoint"):
        load_checkpoint(plain)


def test_average_checkpoints(tmp_path):
    states = [_model_state(s) for s in (1, 2, 3)]
    for i, s in enumerate(states):
        s["1.num_batches_tracked"] = torch.tensor(10 * (i + 1))
        save_checkpoint(tmp_path / f"{i}.pt", {"model": s})
    avg = average_checkpoints([tmp_path / f"{i}.pt" for i in range(3)])
    for key in ("0.weight", "0.bias", "1.weight", "1.running_mean"):
        expected = torch.stack([s[key] for s in states]).mean(0)
        assert torch.allclose(avg[key], expected, atol=1e-6)
        assert avg[key].dtype == states[0][key].dtype
    assert avg["1.num_batches_tracked"].item() == 30  # integers: taken from the last
    other = {"model": {"0.weight": torch.zeros(5, 5)}}
    save_checkpoint(tmp_path / "other.pt", other)
    with pytest.raises(CheckpointError, match="differ"):
        average_checkpoints([tmp_path / "0.pt", tmp_path / "other.pt"])
