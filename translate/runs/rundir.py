"""The run directory: where one run keeps everything needed to go on or to translate.

A run directory is the unit a user moves around ("train here, translate with that"):

============================  ==========================================================
``config.yaml``               the resolved config (every default spelled out)
``tokenizer/``                the sentencepiece models and ``tokenizer.json``
``labels.json``               the label vocabulary: the order of the tagger's outputs
``best.pt`` ``last.pt``       checkpoints (:mod:`translate.runs.checkpoint`); each one carries
``averaged.pt``               its weights and the label thresholds tuned for them
``metrics.jsonl`` ...         what the tracker records (:mod:`translate.tracking.tracker`)
``train.log``                 the trainer's log: printed lines and log records
``wandb_id`` ``wandb/``       the W&B run id (``--resume`` continues it) and W&B's files
``wandb_artifact.json``       the W&B model artifact logged from this run (its name)
``summary.json``              what the run is: written when it starts (device, precision,
                              world size, data, command), updated at each validation and
                              checkpoint, completed (test scores, status) when it ends
============================  ==========================================================

A W&B model artifact (:meth:`RunDir.model_files`) holds the part of this layout inference
needs, so the downloaded artifact folder is itself a run directory.

What belongs to the run (config, tokenizer, labels) is written once, when the run is
prepared, and read back by a resumed run and by inference. What belongs to one set of
weights (the thresholds tuned on validation for them) lives in that checkpoint, so no fact
is kept in two places.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from translate.runs.checkpoint import (
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)

log = logging.getLogger(__name__)

# In the order inference prefers them: averaged exists only when it validated better than best.
CHECKPOINT_NAMES = ("averaged.pt", "best.pt", "last.pt")
# The other files and folders a training run writes (weight snapshots: snapshots()).
RUN_FILES = ("config.yaml", "tokenizer", "labels.json", "shortlist.pt", "metrics.jsonl",
             "samples.jsonl", "summary.json", "valid_hyps.txt", "test_hyps.txt", "train.log",
             "wandb_id", "wandb_artifact.json")


class RunDir:
    """The layout of one run directory. Constructing it touches nothing on disk.

    ``create()`` makes the folders; writers (``save_checkpoint``, the tracker) create
    parent folders on demand, and readers never create anything.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # paths --------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    @property
    def labels_path(self) -> Path:
        return self.root / "labels.json"

    @property
    def best_path(self) -> Path:
        return self.root / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.root / "last.pt"

    @property
    def averaged_path(self) -> Path:
        return self.root / "averaged.pt"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def samples_path(self) -> Path:
        return self.root / "samples.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    @property
    def hyps_path(self) -> Path:
        return self.root / "valid_hyps.txt"

    @property
    def log_path(self) -> Path:
        return self.root / "train.log"

    @property
    def wandb_id_path(self) -> Path:
        return self.root / "wandb_id"

    @property
    def model_artifact_path(self) -> Path:
        return self.root / "wandb_artifact.json"

    @property
    def lock_path(self) -> Path:
        return self.root / ".lock"

    def snapshot_path(self, step: int) -> Path:
        """The weights of the validation at ``step``, kept for checkpoint averaging."""
        return self.root / f"snapshot-{step:09d}.pt"

    def snapshots(self) -> list[Path]:
        """The kept weight snapshots, oldest first (the zero-padded step sorts them)."""
        return sorted(self.root.glob("snapshot-*.pt"))

    # operations ---------------------------------------------------------------
    def create(self) -> RunDir:
        """Create the run folder and its tokenizer folder; returns ``self``."""
        try:
            self.tokenizer_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CheckpointError(f"{self.root}: cannot create the run directory "
                                  f"({err.strerror or err})") from None
        return self

    def lock(self) -> RunLock:
        """Take the run's writer lock (see :class:`RunLock`); raises when another holds it."""
        return RunLock(self.lock_path)

    def truncate_logs(self, step: int) -> None:
        """Cut ``metrics.jsonl`` and ``samples.jsonl`` back to records up to ``step``.

        A resumed run trains the steps after its checkpoint again and logs them again; the
        records the killed process wrote for them must go, or every kill leaves duplicates.
        A torn last line (the process died mid-write) goes too. Rewritten atomically.
        """
        for path in (self.metrics_path, self.samples_path):
            if not path.is_file():
                continue
            lines = path.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if (at := _step_of(line)) is not None and at <= step]
            if len(kept) != len(lines):
                atomic_write_text(path, "".join(line + "\n" for line in kept))
                log.info("%s: dropped %d record(s) after step %d (replayed on resume)",
                         path.name, len(lines) - len(kept), step)

    def checkpoints(self) -> list[Path]:
        """Existing checkpoints, in the order inference prefers them: averaged, best, last."""
        return [self.root / n for n in CHECKPOINT_NAMES if (self.root / n).is_file()]

    def trained(self) -> list[Path]:
        """What an earlier training run left here that a new run would overwrite or mix
        with: checkpoints (weight snapshots included), metrics, a summary of steps taken.
        Empty for a new folder, or one that only holds what starting a run writes before
        its first step (the tokenizer, a summary at step 0: a run that stopped while
        preparing its data)."""
        names = [*CHECKPOINT_NAMES, self.metrics_path.name]
        found = [self.root / n for n in names if (self.root / n).is_file()]
        if self.summary_path.is_file() and self._summary_counts():
            found.append(self.summary_path)
        return found + self.snapshots()

    def _summary_counts(self) -> bool:
        """Whether ``summary.json`` records training (an unreadable one is kept, to be safe)."""
        try:
            summary = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return True
        step = summary.get("step", 1) if isinstance(summary, dict) else 1
        return not isinstance(step, int) or step > 0

    def claim(self, overwrite: bool) -> list[str]:
        """Make this folder a new run's (call it holding the lock); returns the names
        :meth:`clear` deleted. Training over an earlier run would leave a folder that lies:
        its best.pt beside the new config.yaml until the new run first validates, metrics
        of two runs in one file, the old tokenizer reused whatever the new config says. So
        an earlier run is refused (:class:`RunExistsError`) unless ``overwrite``."""
        if overwrite:
            return self.clear()
        found = self.trained()
        if found:
            raise RunExistsError(
                f"{self.root}: holds an earlier run ({', '.join(p.name for p in found[:4])}"
                f"{', ...' if len(found) > 4 else ''}); continue it with `python -m "
                f"translate.train --resume {self.root}`, set another training.run_dir, or "
                "pass --overwrite to delete it and start over")
        return []

    def clear(self) -> list[str]:
        """Delete everything a training run writes here (checkpoints, snapshots, logs,
        summary, hypotheses, tokenizer, labels, shortlist, config, W&B run id), so that a new
        run starts from nothing; returns the names deleted. Offline W&B runs under
        ``wandb/`` and any file of the user's stay. Call it holding the run's lock."""
        names = [*CHECKPOINT_NAMES, *RUN_FILES]
        gone = []
        for path in [self.root / n for n in names] + self.snapshots():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.is_file():
                path.unlink()
            else:
                continue
            gone.append(path.name)
        return gone

    def default_checkpoint(self) -> Path:
        """The checkpoint to translate with when none is named."""
        self.check_complete()
        return self.checkpoints()[0]

    def check_complete(self) -> None:
        """Raise :class:`CheckpointError` listing what is missing for a usable run."""
        if not self.root.is_dir():
            raise CheckpointError(f"{self.root}: run directory does not exist")
        missing = []
        if not self.config_path.is_file():
            missing.append("config.yaml")
        if not self.tokenizer_dir.is_dir() or not any(self.tokenizer_dir.glob("*.model")):
            missing.append("tokenizer/ (sentencepiece *.model files)")
        if not self.checkpoints():
            missing.append("a checkpoint (" + " / ".join(CHECKPOINT_NAMES) + ")")
        if missing:
            raise CheckpointError(
                f"{self.root}: not a usable run directory; missing " + ", ".join(missing)
            )

    def read_summary(self) -> dict:
        """``summary.json`` as a dict; empty when there is none (or it is not a JSON object)."""
        try:
            data = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def update_summary(self, values: dict, replace: bool = False) -> dict:
        """Merge ``values`` into ``summary.json`` (or start it afresh with ``replace``) and
        write it atomically, as checkpoints are: a run killed mid-write leaves the previous
        summary, never half of one. Returns the summary as written."""
        summary = {} if replace else self.read_summary()
        summary.update(values)
        atomic_write_text(self.summary_path,
                          json.dumps(summary, ensure_ascii=False, indent=1) + "\n")
        return summary

    def write_labels(self, labels: Sequence[str]) -> None:
        """Record the label vocabulary; done once, when the run is first prepared."""
        data = {"labels": [str(x) for x in labels]}
        atomic_write_text(self.labels_path, json.dumps(data, ensure_ascii=False, indent=1))

    def read_labels(self) -> list[str] | None:
        """The recorded label vocabulary, or None when the run has not recorded one."""
        labels = self._labels_file().get("labels")
        return None if labels is None else [str(x) for x in labels]

    def legacy_thresholds(self) -> list[float] | None:
        """Thresholds that runs written before each checkpoint carried its own kept here.

        Only for a checkpoint without thresholds of its own: such a run's ``snapshot-*.pt``,
        or a ``last.pt`` saved before its first validation. New runs write none here.
        """
        thresholds = self._labels_file().get("thresholds")
        return None if thresholds is None else [float(t) for t in thresholds]

    def _labels_file(self) -> dict:
        if not self.labels_path.is_file():
            return {}
        try:
            data = json.loads(self.labels_path.read_text(encoding="utf-8"))
            if not isinstance(data["labels"], list) or \
                    not isinstance(data.get("thresholds") or [], list):
                raise TypeError("'labels' and 'thresholds' must be lists")
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{self.labels_path}: unreadable labels file: {err}") from None
        return data

    @property
    def shortlist_path(self) -> Path:
        return self.root / "shortlist.pt"

    def write_shortlist(self, state: dict) -> None:
        """The decoding shortlist's lexical table (:mod:`translate.search.shortlist`),
        written atomically."""
        save_checkpoint(self.shortlist_path, state)

    def read_shortlist(self) -> dict | None:
        """The saved lexical table, or None for runs trained before shortlists existed."""
        if not self.shortlist_path.is_file():
            return None
        return load_checkpoint(self.shortlist_path)

    def last_logged_step(self) -> int:
        """The highest step in ``metrics.jsonl`` (0 when none): what a killed run had sent."""
        if not self.metrics_path.is_file():
            return 0
        steps = (_step_of(line) for line in
                 self.metrics_path.read_text(encoding="utf-8").splitlines())
        return max((s for s in steps if s is not None), default=0)

    def model_files(self) -> list[tuple[Path, str]]:
        """(path, name) of what inference reads: the checkpoint it would pick (averaged,
        else best, else last), the tokenizer, config, labels, shortlist and artifact record.
        Laid out as here, so that a copy of them is a run directory of its own."""
        picked = self.default_checkpoint()
        names = ("config.yaml", "tokenizer", "labels.json", "shortlist.pt",
                 self.model_artifact_path.name)
        return [(picked, picked.name)] + [(self.root / n, n) for n in names
                                          if (self.root / n).exists()]

    def write_model_artifact(self, name: str, project: str, entity: str | None) -> None:
        """Record the W&B model artifact of this run, for evaluation runs to link to."""
        data = {"name": name, "project": project, "entity": entity}
        atomic_write_text(self.model_artifact_path, json.dumps(data) + "\n")

    def read_model_artifact(self) -> dict | None:
        """The recorded model artifact (name, project, entity), or None (none logged)."""
        try:
            data = json.loads(self.model_artifact_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("name"), str) else None

    def read_wandb_id(self) -> str | None:
        """The W&B run id recorded by the tracker, for ``--resume``."""
        if not self.wandb_id_path.is_file():
            return None
        return self.wandb_id_path.read_text(encoding="utf-8").strip() or None

    @staticmethod
    def latest(runs_root: str | os.PathLike[str] = "runs") -> Path:
        """The run directory under ``runs_root`` whose newest checkpoint is the most recent.

        Used by ``infer`` without ``--model``. Ranking by checkpoint time (not folder time)
        means a run that only wrote logs does not win over one that has weights.
        """
        root = Path(runs_root)
        if not root.is_dir():
            raise CheckpointError(f"{root}: no runs folder; pass the run directory explicitly")
        best: tuple[float, Path] | None = None
        for dirpath, dirnames, filenames in os.walk(root):
            # wandb/ and tokenizer/ can hold many files and never hold our checkpoints
            dirnames[:] = [d for d in dirnames if d not in ("wandb", "tokenizer")]
            stamps = [
                os.stat(os.path.join(dirpath, n)).st_mtime
                for n in CHECKPOINT_NAMES
                if n in filenames
            ]
            if stamps and (best is None or max(stamps) > best[0]):
                best = (max(stamps), Path(dirpath))
        if best is None:
            raise CheckpointError(
                f"{root}: no run with a checkpoint ({', '.join(CHECKPOINT_NAMES)}) found; "
                "pass the run directory explicitly"
            )
        return best[1]


def _step_of(line: str) -> int | None:
    """The ``step`` of one JSON-lines record; None for a torn or foreign line."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None


class RunLock:
    """One writer per run directory: an exclusive ``flock`` held while the lock is open.

    The kernel drops a ``flock`` when its process dies, so a ``kill -9`` leaves no stale
    lock to clean up; the file keeps the holder's PID only so the error can name it.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            self.release()
            raise RunLockedError(
                f"{path.parent}: another translate.train (PID {holder}) is writing to this "
                "run directory; wait for it to end or choose another training.run_dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode("ascii"), 0)

    def release(self) -> None:
        """Close the file, which drops the lock; safe to call twice."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.release()


class RunLockedError(CheckpointError):
    """Another process holds the run directory's writer lock."""


class RunExistsError(CheckpointError):
    """A new run was asked to start in a run directory that holds an earlier run."""
