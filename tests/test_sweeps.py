"""W&B sweeps drive training: the agent's spellings of a parameter are config overrides, and
configs/sweeps/multi30k.yaml runs as an agent runs it.

The agent itself is wandb's: ``wandb.wandb_agent.Agent`` builds the command line from the
sweep file's ``command`` and starts it (``_command_run``), and stops a run as hyperband has it
stopped (``_command_stop``: SIGTERM). Only the sweep controller, on W&B's servers, is absent:
the test hands the agent the run command the controller would send. Offline, the values must
land in the run's config.yaml, its summary.json and its W&B run's config.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from translate import config as config_mod
from translate.tracking.wandb_run import LAYOUT
from translate.train import parse_args

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "configs" / "sweeps" / "multi30k.yaml"
TUNED = ("training.lr", "model.dropout", "training.label_smoothing", "training.max_tokens")


def _sweep() -> dict:
    return yaml.safe_load(SWEEP.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- parsing


def test_both_agent_spellings_are_overrides_after_set() -> None:
    args = parse_args(["--config", "configs/multi30k.yaml", "--set", "training.lr=1e-3",
                       "--training.lr=2e-3", "model.dropout=0.35",
                       "--data.train[0].max_pairs=500", "data.sampling.weights.geography-"
                       "languages=2", "--verbose"])
    assert args.overrides == ["training.lr=1e-3", "training.lr=2e-3", "model.dropout=0.35",
                              "data.train[0].max_pairs=500",
                              "data.sampling.weights.geography-languages=2"]
    assert args.verbose and args.config == "configs/multi30k.yaml"
    cfg = config_mod.load(ROOT / "configs" / "multi30k.yaml", args.overrides)
    assert cfg.training.lr == 2e-3  # the later one wins, as with two --set
    assert cfg.model.dropout == 0.35 and cfg.data.train[0].max_pairs == 500
    assert cfg.data.sampling.weights == {"geography-languages": 2.0}


def _train(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "translate.train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "WANDB_MODE": "disabled", **(env or {})})


@pytest.mark.parametrize(("args", "expected"), [
    (["--training.lr"], "python -m translate.train: error: --training.lr: a config override "
                        "needs a value: --training.lr=VALUE (see --help)"),
    (["training.lr", "0.1"], "python -m translate.train: error: unrecognized arguments: "
                             "training.lr (config overrides are written --set KEY=VALUE, "
                             "--KEY=VALUE or KEY=VALUE, with a dotted KEY such as training.lr) "
                             "(see --help)"),
    (["--lr=0.1"], "python -m translate.train: error: unrecognized arguments: --lr=0.1 ("),
    (["--training.lrr=0.1"], "translate.train: error: configs/multi30k.yaml: training.lrr: "
                             "unknown key; expected one of run_dir, device, precision"),
    (["model.dropout=high"], "translate.train: error: configs/multi30k.yaml: model.dropout: "
                             "expected float, got 'high'"),
    (["--data.train[x].prefix=a"], "translate.train: error: --set data.train[x].prefix: list "
                                   "indices must be integers"),
    (["--training.run_dir=runs/$NO_SUCH_VARIABLE_SET"],
     "translate.train: error: training.run_dir: runs/$NO_SUCH_VARIABLE_SET: the environment "
     "variable NO_SUCH_VARIABLE_SET is not set"),
])
def test_agent_spelling_mistakes_are_one_line_errors(args: list[str], expected: str) -> None:
    proc = _train("--config", "configs/multi30k.yaml", *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(expected), lines[0]


def test_run_dir_takes_environment_variables(monkeypatch) -> None:
    monkeypatch.setenv("WANDB_RUN_ID", "ab12cd34")
    assert config_mod.expand_environment("runs/sweeps/${WANDB_RUN_ID}/x-$WANDB_RUN_ID",
                                         "training.run_dir") == \
        "runs/sweeps/ab12cd34/x-ab12cd34"
    assert config_mod.expand_environment("runs/plain", "training.run_dir") == "runs/plain"


# --------------------------------------------------------------------------- the sweep file


def test_sweep_file_searches_config_keys_for_the_logged_metric() -> None:
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    sweep = _sweep()
    assert sweep["method"] == "bayes" and sweep["project"] == "translate"
    # the metric every validation logs, whose W&B summary keeps the best value
    assert sweep["metric"] == {"name": "valid/bleu", "goal": "maximize"}
    assert ("valid/bleu", "max") in LAYOUT
    assert sweep["early_terminate"]["type"] == "hyperband"
    assert sweep["early_terminate"]["min_iter"] >= 1 and sweep["early_terminate"]["eta"] > 1
    params = sweep["parameters"]
    assert set(TUNED) <= set(params)
    # every corner of the search space is a config the trainer accepts
    corners: list[dict] = [{}, {}]
    for key, spec in params.items():
        for corner, pick in zip(corners, (min, max), strict=True):
            corner[key] = spec["value"] if "value" in spec else (
                pick(spec["values"]) if "values" in spec else spec["min" if pick is min
                                                                    else "max"])
    for corner in corners:
        argv = create_sweep_command_args({"args": {k: {"value": v}
                                                   for k, v in corner.items()}})["args"]
        overrides = parse_args(["--config", "configs/multi30k.yaml", *argv]).overrides
        cfg = config_mod.load(ROOT / "configs" / "multi30k.yaml", overrides)
        assert cfg.training.lr == corner["training.lr"]
        assert cfg.training.max_tokens == corner["training.max_tokens"]
    command = sweep["command"]
    assert command[:6] == ["${env}", "${interpreter}", "-m", "translate.train", "--config",
                           "configs/multi30k.yaml"] and command[-1] == "${args}"


# --------------------------------------------------------------------------- a real agent


def _wandb_records(run_dir: Path) -> list:
    """The records of the offline W&B run in ``run_dir`` (its ``run-<id>.wandb`` file, the
    leveldb-style log ``wandb sync`` uploads: 32 KiB blocks of checksummed chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, block = path.read_bytes(), 32768
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            pos += left - 7 - length
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # full/first; middle/last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _wandb_config(run_dir: Path) -> dict:
    config: dict = {}
    for record in _wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        items = (record.run.config.update if kind == "run" else
                 record.config.update if kind == "config" else [])
        config.update({item.key: json.loads(item.value_json) for item in items})
    return config


def _wait_for(condition, proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended early (exit {proc.poll()})"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_an_agent_runs_the_sweep_command_and_stops_it_offline(multi30k: Path, tmp_path: Path,
                                                             monkeypatch) -> None:
    """wandb's agent turns the run command into the command line and starts it; the values
    reach config.yaml, summary.json and the W&B config; hyperband's stop (SIGTERM) ends the
    run as interrupted, resumable, with its scores so far."""
    from wandb.wandb_agent import Agent

    # What the agent sets or reads in its own environment, restored after the test.
    for name, value in {"WANDB_DIR": str(tmp_path), "WANDB_MODE": "offline",
                        "WANDB_SWEEP_ID": "s1", "WANDB_RUN_ID": "",
                        "WANDB_SWEEP_PARAM_PATH": "", "WANDB_SILENT": "true",
                        "PYTHONPATH": str(ROOT),
                        # ${interpreter} is "python": this environment's
                        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)  # where `--config configs/multi30k.yaml` is
    tuned = {"training.lr": 0.0021, "model.dropout": 0.25, "training.label_smoothing": 0.05,
             "training.max_tokens": 600}
    # A tiny model on a slice of the corpus, pinned as a sweep file would pin them (value:).
    pinned = {"training.run_dir": f"{tmp_path}/runs/$WANDB_RUN_ID",
              "data.cache_dir": str(tmp_path / "cache"),
              "data.train[0].prefix": str(multi30k / "train"),
              "data.valid[0].prefix": str(multi30k / "val"),
              "data.test[0].prefix": str(multi30k / "test_2016_flickr"),
              "data.train[0].max_pairs": 1500, "data.valid[0].max_pairs": 30,
              "data.test[0].max_pairs": 30, "tokenizer.vocab_size": 500,
              "model.emb_dim": 32, "model.enc_hidden": 32, "model.dec_hidden": 64,
              "model.enc_layers": 1, "model.dec_layers": 1, "training.precision": "fp32",
              "training.num_threads": 1, "training.valid_every": 3,
              "training.max_steps": 100000, "logging.attention_samples": 0,
              "logging.artifacts": False}
    agent = Agent(api=None, queue=None, sweep_id="s1")
    agent._sweep_command = _sweep()["command"]  # what the agent reads from the sweep
    agent._command_run({"type": "run", "run_id": "swp00001", "program": None,
                        "args": {k: {"value": v} for k, v in {**tuned, **pinned}.items()}})
    proc = agent._run_processes["swp00001"]
    run = tmp_path / "runs" / "swp00001"  # $WANDB_RUN_ID, as the agent set it

    def validated() -> bool:
        summary = run / "summary.json"
        return summary.is_file() and json.loads(summary.read_text("utf-8")).get("step", 0) >= 3

    try:
        _wait_for(validated, proc, timeout=240)
        agent._command_stop({"run_id": "swp00001"})  # what hyperband's verdict makes it do
        assert proc.wait(timeout=120) == 0  # a clean stop, not a crash
    finally:
        if proc.poll() is None:
            proc.kill()

    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["training"]["lr"] == 0.0021 and saved["model"]["dropout"] == 0.25
    assert saved["training"]["label_smoothing"] == 0.05
    assert saved["training"]["max_tokens"] == 600
    assert saved["training"]["run_dir"] == str(run)

    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM"
    assert summary["resume"] == f"python -m translate.train --resume {run}"
    assert summary["step"] >= 3 and summary["best_valid"] is not None
    argv = summary["command"]["argv"]
    assert argv[:4] == ["--config", "configs/multi30k.yaml", "--set",
                        "training.run_dir=runs/sweeps/multi30k/$WANDB_RUN_ID"]
    assert "--training.lr=0.0021" in argv and "--model.dropout=0.25" in argv
    for key, value in tuned.items():
        assert f"{key}={value}" in summary["command"]["overrides"]
    assert summary["wandb"] == {"mode": "offline", "id": "swp00001", "project": "translate"}

    config = _wandb_config(run)
    assert config["training"]["lr"] == 0.0021 and config["model"]["dropout"] == 0.25
    assert config["training"]["label_smoothing"] == 0.05
    assert config["training"]["max_tokens"] == 600
    for key, value in tuned.items():  # the sweep's own keys, read from the agent's file
        assert config[key] == value
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("valid/bleu" in r for r in logged)  # the sweep's metric
