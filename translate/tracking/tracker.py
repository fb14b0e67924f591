"""Experiment tracking: a local ``metrics.jsonl`` always, W&B when it can work unattended.

Training runs for hours on machines nobody watches, so tracking must never stop it:
no login prompt (stdin may be closed), no waiting on an unreachable server, and a W&B
failure mid-run only turns W&B off (with one warning) while the local log continues.

Whether W&B runs, and how (``logging.wandb`` against the environment and the credentials:
:func:`translate.tracking.wandb_run.resolve_mode`, re-exported here), and every W&B call live in
:mod:`translate.tracking.wandb_run`; this module keeps what is written whatever W&B does. An
offline run ends with the ``wandb sync`` command that uploads it (:meth:`Tracker.finish`).

W&B files go under the run directory (``<run>/wandb/``) so it stays self-contained; the
W&B run id is kept in ``<run>/wandb_id`` so ``--resume`` continues the same W&B run
(:mod:`translate.tracking.wandb_run` owns the W&B calls and the resume semantics). ``wandb`` is
imported only when used, so ``disabled`` costs nothing at startup and writes no W&B file.

Besides the metrics, the run keeps its own log, ``<run>/train.log`` (:func:`run_log`): the
lines the trainer prints for the person watching (:func:`say`) and the package's log records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from translate.config import LoggingConfig
from translate.runs.rundir import RunDir
from translate.tracking.wandb_run import (  # noqa: F401  (re-exported: the tracking API)
    TrackingError,
    WandbRun,
    find_api_key,
    new_run_id,
    resolve_mode,
)

__all__ = ["Tracker", "TrackingError", "find_api_key", "resolve_mode", "run_log", "say"]

DEFAULT_INIT_TIMEOUT = 20.0  # seconds; wandb's own default (90 s) would stall a run start
SAMPLE_COLUMNS = ("step", "index", "source", "reference", "hypothesis", "chrf")


# --------------------------------------------------------------------------- train.log

# The trainer's printed lines, as records for train.log only: on the console they are
# already there (tqdm.write keeps them above the progress bar), so they must not reach the
# root logger's console handler a second time.
_PRINTED = logging.getLogger("translate.printed")
_PRINTED.propagate = False
_PRINTED.setLevel(logging.INFO)


def say(text: str) -> None:
    """Print a line for the person watching a run (above the progress bar), and keep it in
    the run's ``train.log`` while :func:`run_log` is open."""
    tqdm.write(text)
    sys.stdout.flush()  # without a terminal stdout is block-buffered; a log file shows it now
    _PRINTED.info(text)


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Append to ``path`` (the run's ``train.log``) what the run says while the block runs.

    That is every :func:`say` line, and the records of the ``translate`` loggers (data,
    tokenizer, trainer, tracking) at the level the process's logging lets through: INFO from
    ``python -m translate.train``, DEBUG with ``--verbose``; a library caller who configured
    nothing gets warnings. A resumed run appends to the same file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           datefmt="%Y-%m-%d %H:%M:%S"))
    loggers = (logging.getLogger("translate"), _PRINTED)
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()


# --------------------------------------------------------------------------- tracker


def _plain(value: Any) -> Any:
    """JSON-safe scalar: tensors/numpy scalars to Python numbers, non-finite floats to null."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return str(value)


def _append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return [r for r in records if isinstance(r, dict)]


class Tracker:
    """Metrics to ``run_dir.metrics_path`` and (unless disabled) to W&B.

    ``mode``: the result of :func:`resolve_mode`, for a caller that resolved it before
    starting long work (a bad ``WANDB_MODE`` should not wait for the corpus to be built).
    ``resume_id``: continue that W&B run; ``resume_step``: the last step the interrupted
    process logged (what it sent is not sent again when the resumed run replays it).
    """

    def __init__(
        self,
        cfg: LoggingConfig,
        run_dir: RunDir,
        config: dict,
        resume_id: str | None = None,
        init_timeout: float = DEFAULT_INIT_TIMEOUT,
        mode: str | None = None,
        resume_step: int = 0,
    ) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.mode = mode or resolve_mode(cfg.wandb)
        self.wandb: WandbRun | None = None
        self._finished = False
        self._samples: list[list] = []  # every sample row so far: one table to follow them
        run_dir.root.mkdir(parents=True, exist_ok=True)
        if self.mode == "disabled":
            return
        self.wandb = WandbRun.start(
            project=cfg.project, entity=cfg.entity, name=cfg.run_name, root=run_dir.root,
            config=config, run_id=resume_id or new_run_id(), resume=bool(resume_id),
            init_timeout=init_timeout, mode=self.mode,
            floor=resume_step if resume_id else 0)  # a new W&B run has nothing yet
        if self.wandb is None:
            self.mode = "disabled"
            return
        self.mode = self.wandb.mode
        run_dir.wandb_id_path.write_text(self.wandb.run.id + "\n", encoding="utf-8")
        if resume_id:  # the table goes on with the rows the interrupted process logged
            self._samples = [[_plain(r.get(c)) for c in SAMPLE_COLUMNS]
                             for r in _read_jsonl(run_dir.samples_path)]

    @property
    def active(self) -> bool:
        """True while W&B takes records (callers skip work only W&B would show)."""
        return self.wandb is not None and self.wandb.active

    @property
    def sync_command(self) -> str | None:
        return None if self.wandb is None else self.wandb.sync_command

    # logging --------------------------------------------------------------------
    def log(self, metrics: dict, step: int) -> None:
        """Append one line ``{"step", "time", **metrics}`` and send the metrics to W&B."""
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({str(k): _plain(v) for k, v in metrics.items() if k not in record})
        _append_jsonl(self.run_dir.metrics_path, record)
        if self.active:
            self.wandb.log({k: v for k, v in record.items() if k not in ("step", "time")},
                           int(step))

    def log_samples(self, rows: list[dict], step: int) -> None:
        """Sample translations (index, source, reference, hypothesis, chrf) at ``step``:
        to ``samples.jsonl``, and to W&B as one table holding every validation's rows, so
        that filtering on ``index`` follows one sentence across training."""
        for row in rows:
            _append_jsonl(self.run_dir.samples_path,
                          {"step": int(step), **{k: _plain(v) for k, v in row.items()}})
        if not rows or not self.active:
            return
        self._samples.extend([_plain(row.get(c, step if c == "step" else None))
                              for c in SAMPLE_COLUMNS] for row in rows)
        self.wandb.table("valid/samples", SAMPLE_COLUMNS, self._samples, int(step))

    def log_table(self, key: str, rows: Sequence[dict], step: int | None = None) -> None:
        """Rows of dicts as one W&B table (e.g. the test set's worst sentences)."""
        if not rows or not self.active:
            return
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        self.wandb.table(key, columns, [[_plain(r.get(c)) for c in columns] for r in rows],
                         step)

    def log_images(self, key: str, images: Sequence[Any], step: int,
                   captions: Sequence[str] | None = None) -> None:
        """Images (numpy HxW[x3] arrays or PIL images) under ``key``; W&B only."""
        if images and self.active:
            self.wandb.images(key, images, int(step), captions)

    def log_tagging(self, probs: Any, targets: Any, labels: Sequence[str], step: int) -> None:
        """The domain head on validation: precision-recall curves per label and a confusion
        table of the most probable against the gold domain (W&B only)."""
        if not self.active or not len(labels):
            return
        from translate.tracking.dashboard import confusion_pairs, confusion_rows, pr_rows

        self.wandb.chart("valid/pr_curves", "wandb/area-under-curve/v0",
                         ("label", "threshold", "precision", "recall"),
                         pr_rows(probs, targets, labels),
                         {"x": "recall", "y": "precision", "class": "label"},
                         "Domain tags: precision-recall per label", int(step))
        gold, pred = confusion_pairs(probs, targets)
        self.wandb.chart("valid/domain_confusion", "wandb/confusion_matrix/v1",
                         ("gold", "predicted", "count"), confusion_rows(gold, pred, labels),
                         {"Actual": "gold", "Predicted": "predicted", "nPredictions": "count"},
                         "Domains: most probable (argmax) against gold", int(step))

    def log_model(self, aliases: Sequence[str] = ("best", "latest")) -> int | None:
        """The run's weights, tokenizer, labels and config as one model artifact (a valid
        run directory once downloaded); returns its size in bytes, None when not logged."""
        if not self.active:
            return None
        name = f"model-{self.wandb.run.id}"
        self.run_dir.write_model_artifact(name, self.cfg.project, self.cfg.entity)
        files = self.run_dir.model_files()
        size = sum(f.stat().st_size for path, _ in files
                   for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file())
        metadata = {"files": [n for _, n in files], "bytes": size}
        return size if self.wandb.artifact(name, files, aliases, metadata) else None

    def summary(self, metrics: dict) -> None:
        """Final scores (e.g. test BLEU): W&B run summary and ``summary.json``."""
        values = {str(k): _plain(v) for k, v in metrics.items()}
        self.run_dir.update_summary(values)  # merged into what the run recorded so far
        if self.active:
            self.wandb.summary(values)

    def finish(self, exit_code: int = 0) -> None:
        """Close the W&B run; when offline, print the command that uploads it later."""
        if self._finished:
            return
        self._finished = True
        if self.wandb is None:
            return
        self.wandb.finish(exit_code)
        if self.sync_command:
            print(f"wandb: offline run saved; upload it with: {self.sync_command}",
                  file=sys.stderr)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)
