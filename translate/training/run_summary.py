"""``summary.json`` while a run runs: written when it starts, updated as it goes.

A run killed by the OOM killer, a preempted machine or ``kill -9`` never reaches its end, yet
whoever finds its folder must still learn what it was: how many processes trained, with
which backend, on which device, in which precision, from which data, with which command.
So the summary is written before the data is prepared (status ``preparing``), again once
training starts (``training``: corpus sizes, the readable copy of the corpus, the W&B run),
at every validation and checkpoint (step, epochs, best score, speed) and when the run ends
(``finished``, ``interrupted`` or ``failed``, with the test scores or the error). Every write
replaces the file atomically (:meth:`translate.runs.rundir.RunDir.update_summary`).
"""

from __future__ import annotations

import dataclasses
import platform
import socket
from datetime import UTC, datetime
from importlib import metadata

import torch

from translate.config import Config, DataConfig, SourceConfig
from translate.runs.rundir import RunDir

_DEFAULT_SOURCE = SourceConfig()


def now() -> str:
    """The current time as ISO 8601 in UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def configured_sources(cfg: DataConfig) -> list[dict]:
    """Each source of the config as its group (``data.train[0]``) and the keys that differ
    from a source's defaults (``kind`` always): where the data comes from, before it is read."""
    out = []
    for group in ("train", "valid", "test", "unsplit"):
        for i, source in enumerate(getattr(cfg, group)):
            fields = {f.name: getattr(source, f.name) for f in dataclasses.fields(source)}
            keep = {k: v for k, v in fields.items()
                    if k == "kind" or v != getattr(_DEFAULT_SOURCE, k)}
            out.append({"group": f"data.{group}[{i}]", **keep})
    return out


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


class RunSummary:
    """The writer of a run's ``summary.json`` until the run ends (rank 0 only under DDP;
    ``enabled=False`` makes every call a no-op on the other ranks)."""

    def __init__(self, run: RunDir, enabled: bool = True) -> None:
        self.run = run
        self.enabled = enabled

    def _write(self, values: dict, replace: bool = False) -> None:
        if self.enabled:
            self.run.update_summary({**values, "updated": now()}, replace=replace)

    def start(self, cfg: Config, *, resume: bool, world_size: int, backend: str | None,
              device: torch.device, dtype: torch.dtype, origin: dict | None) -> None:
        """What the run is, before its data is read. A new run starts the file afresh; a
        resumed one keeps what its earlier process recorded and says when it went on."""
        facts = {
            "status": "preparing",
            "run_dir": str(self.run.root),
            "world_size": world_size, "backend": backend,
            "device": str(device), "precision": str(dtype).removeprefix("torch."),
            "precision_setting": cfg.training.precision,
            "threads": torch.get_num_threads(),
            "host": socket.gethostname(),
            "versions": {"translate": _version("translate"), "torch": torch.__version__,
                         "python": platform.python_version()},
            "command": origin,  # the command line's config and overrides (None from Python)
            "data": {"src_lang": cfg.data.src_lang, "tgt_lang": cfg.data.tgt_lang,
                     "sources": configured_sources(cfg.data)},
        }
        if resume:
            facts["resumed"] = now()
            facts["ended"] = None
            self._write(facts)
        else:
            self._write({**facts, "started": now(), "step": 0}, replace=True)

    def training(self, report: dict, parameters: int, labels: list[str],
                 wandb: dict | None) -> None:
        """The prepared data (pairs per split, where its readable copy and cache are) and
        the model, once the first step is about to run."""
        data = {k: report[k] for k in ("pairs", "sources", "cache_path", "corpus_dir")
                if k in report}
        current = self.run.read_summary().get("data", {}) if self.enabled else {}
        self._write({"status": "training", "parameters": parameters, "labels": labels,
                     "wandb": wandb, "data": {**current, **data}})

    def progress(self, step: int, epochs: int, best: float | None, elapsed: float,
                 tokens: int) -> None:
        """Where training stands (at a validation or a checkpoint)."""
        self._write({"step": step, "epochs": epochs, "best_valid": best,
                     "train_minutes": elapsed / 60, "tokens_per_s": tokens / max(elapsed, 1e-9)})

    def ended(self, status: str, **values) -> None:
        """``finished``, ``interrupted`` (with the signal and the resume command) or
        ``failed`` (with the error, in one line)."""
        self._write({"status": status, "ended": now(), **values})


def one_line(err: BaseException) -> str:
    """An exception as ``Type: message`` on one line, for the summary of a failed run."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__

