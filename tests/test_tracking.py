"""Tracking: mode resolution without prompts, real offline wandb runs, disabled = no wandb files."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from translate.config import LoggingConfig
from translate.runs.rundir import RunDir
from translate.tracking.tracker import Tracker, TrackingError, find_api_key, resolve_mode

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 hex chars, wandb's key format
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No credentials anywhere: HOME in tmp, no key/netrc/settings variables, cwd in tmp."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_BASE_URL",
                "WANDB_CONFIG_DIR", "WANDB_DISABLED", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return home


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_auto_resolution_follows_credentials(clean_env, tmp_path, monkeypatch):
    assert find_api_key() is None
    assert resolve_mode("auto") == "offline"

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_mode("auto") == "online"
    monkeypatch.delenv("WANDB_API_KEY")

    # ~/.netrc entry for the W&B host, as `wandb login` writes it
    netrc_text = f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n"
    (clean_env / ".netrc").write_text(netrc_text)
    assert find_api_key() == FAKE_KEY
    assert resolve_mode("auto") == "online"
    # $NETRC wins over ~/.netrc; an entry for another host is not a W&B key
    other = tmp_path / "other_netrc"
    other.write_text("machine example.com login u password secret\n")
    monkeypatch.setenv("NETRC", str(other))
    assert resolve_mode("auto") == "offline"
    # ... unless WANDB_BASE_URL points at that host (self-hosted server)
    monkeypatch.setenv("WANDB_BASE_URL", "https://example.com")
    assert find_api_key() == "secret"
    monkeypatch.delenv("WANDB_BASE_URL")
    monkeypatch.delenv("NETRC")
    (clean_env / ".netrc").unlink()

    # api_key in wandb's global settings file
    config_dir = tmp_path / "wandb_config"
    config_dir.mkdir()
    (config_dir / "settings").write_text(f"[default]\napi_key = {FAKE_KEY}\n")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(config_dir))
    assert resolve_mode("auto") == "online"


def test_environment_overrides(clean_env, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled"
    assert resolve_mode("online") == "disabled"  # the kill switch beats explicit settings
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("auto") == "offline"
    assert resolve_mode("online") == "online"  # explicit config beats a non-disabling env
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(TrackingError, match="WANDB_MODE='sometimes'"):
        resolve_mode("auto")
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_DISABLED", "true")
    assert resolve_mode("auto") == "disabled"
    monkeypatch.delenv("WANDB_DISABLED")
    # online without any key: offline with a warning, never a login prompt
    monkeypatch.delenv("WANDB_API_KEY")
    with caplog.at_level(logging.WARNING, logger="translate.tracking.tracker"):
        assert resolve_mode("online") == "offline"
    assert "no API key" in caplog.text
    with pytest.raises(TrackingError, match="logging.wandb"):
        resolve_mode("yes")


def test_disabled_writes_metrics_but_nothing_of_wandb(clean_env, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_dir = RunDir(tmp_path / "run")
    tracker = Tracker(LoggingConfig(wandb="auto"), run_dir, config={"a": 1})
    assert tracker.mode == "disabled"
    tracker.log({"loss": torch.tensor(2.5), "lr": 1e-3, "bad": float("nan")}, step=10)
    tracker.log({"loss": 2.0}, step=20)
    tracker.log_samples([{"source": "Hallo", "reference": "Hello", "hypothesis": "Hi"}], step=20)
    tracker.summary({"test_bleu": 31.5})
    tracker.finish()
    lines = _lines(run_dir.metrics_path)
    assert [line["step"] for line in lines] == [10, 20]
    assert lines[0]["loss"] == 2.5 and lines[0]["lr"] == 1e-3 and lines[0]["bad"] is None
    assert isinstance(lines[0]["time"], float)
    assert _lines(run_dir.samples_path)[0]["hypothesis"] == "Hi"
    assert json.loads(run_dir.summary_path.read_text())["test_bleu"] == 31.5
    assert tracker.sync_command is None
    leftovers = sorted(p.name for p in run_dir.root.iterdir())
    assert leftovers == ["metrics.jsonl", "samples.jsonl", "summary.json"]
    assert not (tmp_path / "wandb").exists()  # nor in the working directory


def test_disabled_does_not_import_wandb(clean_env, tmp_path):
    code = (
        "import sys\n"
        "from translate.runs.rundir import RunDir\n"
        "from translate.config import LoggingConfig\n"
        "from translate.tracking.tracker import Tracker\n"
        f"t = Tracker(LoggingConfig(wandb='disabled'), RunDir({str(tmp_path / 'r')!r}), {{}})\n"
        "t.log({'x': 1}, step=1); t.finish()\n"
        "assert 'wandb' not in sys.modules, 'wandb was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr


def test_offline_run_writes_sync_files_and_resumes(clean_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = RunDir(tmp_path / "run")
    cfg = LoggingConfig(wandb="auto", project="translate-tests")
    tracker = Tracker(cfg, run_dir, config={"training": {"lr": 0.001}})
    assert tracker.mode == "offline"
    tracker.log({"train/loss": 3.0}, step=1)
    tracker.log_samples(
        [{"source": "Ein Hund.", "reference": "A dog.", "hypothesis": "A dog."}], step=1
    )
    tracker.summary({"test/bleu": 12.0})
    tracker.finish()
    err = capsys.readouterr().err
    offline_dirs = sorted((run_dir.root / "wandb").glob("offline-run-*"))
    assert len(offline_dirs) == 1
    run_id = run_dir.read_wandb_id()
    assert run_id and offline_dirs[0].name.endswith(f"-{run_id}")
    assert list(offline_dirs[0].glob("*.wandb"))
    assert f"wandb sync {offline_dirs[0]}" in err
    assert tracker.sync_command == f"wandb sync {offline_dirs[0]}"
    assert _lines(run_dir.metrics_path)[0]["train/loss"] == 3.0

    # --resume: same W&B id, metrics appended to the same local log. W&B names offline run
    # folders by the start time in whole seconds: start the resumed run in the next second.
    time.sleep(1.05 - time.time() % 1)
    resumed = Tracker(cfg, run_dir, config={}, resume_id=run_id)
    resumed.log({"train/loss": 2.0}, step=2)
    resumed.finish()
    assert run_dir.read_wandb_id() == run_id
    assert len(list((run_dir.root / "wandb").glob(f"offline-run-*-{run_id}"))) == 2
    assert [line["step"] for line in _lines(run_dir.metrics_path)] == [1, 2]


def test_online_start_failure_falls_back_to_offline(clean_env, tmp_path, monkeypatch, caplog):
    """A key but no reachable server: bounded wait, then an offline run, not a hang."""
    with socket.socket() as s:  # a local port with nothing listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    run_dir = RunDir(tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="translate.tracking.tracker"):
        tracker = Tracker(LoggingConfig(wandb="auto"), run_dir, config={}, init_timeout=2)
    assert "online start failed" in caplog.text
    assert tracker.mode == "offline"
    tracker.log({"loss": 1.0}, step=1)
    tracker.finish()
    assert tracker.sync_command is not None
    assert list((run_dir.root / "wandb").glob("offline-run-*/*.wandb"))
