"""Run directories and checkpoints: safe to write, safe to read.

A run directory is the unit a user moves around ("train here, translate with that"), so
everything needed to translate lives in it: the resolved config, the sentencepiece models,
the label vocabulary with tuned thresholds and the weights.

Checkpoints are written atomically (temp file in the same directory, fsync, ``os.replace``)
so a crash or a full disk mid-save never destroys the previous good ``last.pt``. They are
read with ``torch.load(weights_only=True)`` so a checkpoint downloaded from a stranger cannot
run code: the state is plain data only (tensors, dicts, lists, numbers, strings), which is
also why the RNG states of ``random`` and numpy are converted to tensors/lists before saving.

Checkpoint state keys (by convention; the trainer owns the content):
``version`` (stamped by :func:`save_checkpoint`), ``model``, ``optimizer``, ``scheduler``,
``scaler`` (state dicts), ``step``, ``epoch``, ``batch_in_epoch``, ``rng``
(:func:`capture_rng_state`), ``config`` (the resolved config as a dict).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import random
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

# Bump when the meaning of the state changes; loading refuses anything outside
# [MIN_CHECKPOINT_VERSION, CHECKPOINT_VERSION] instead of failing later with a KeyError.
CHECKPOINT_VERSION = 1
MIN_CHECKPOINT_VERSION = 1

CHECKPOINT_NAMES = ("averaged.pt", "best.pt", "last.pt")


class CheckpointError(RuntimeError):
    """A checkpoint or run directory that cannot be used; the message names the file."""


# --------------------------------------------------------------------------- run directory


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
    def shortlist_path(self) -> Path:
        return self.root / "shortlist.pt"

    # operations ---------------------------------------------------------------
    def create(self) -> RunDir:
        """Create the run folder and its tokenizer folder; returns ``self``."""
        self.tokenizer_dir.mkdir(parents=True, exist_ok=True)
        return self

    def checkpoints(self) -> list[Path]:
        """Existing checkpoints, in the order inference prefers them: averaged, best, last."""
        return [self.root / n for n in CHECKPOINT_NAMES if (self.root / n).is_file()]

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

    def write_labels(
        self, labels: Sequence[str], thresholds: Sequence[float] | None = None
    ) -> None:
        """Write the label vocabulary and (optionally) per-label decision thresholds."""
        if thresholds is not None and len(thresholds) != len(labels):
            raise ValueError(f"{len(labels)} labels but {len(thresholds)} thresholds")
        data = {
            "labels": list(labels),
            "thresholds": None if thresholds is None else [float(t) for t in thresholds],
        }
        atomic_write_text(self.labels_path, json.dumps(data, ensure_ascii=False, indent=1))

    def read_labels(self) -> tuple[list[str], list[float] | None]:
        """Return ``(labels, thresholds)``; ``([], None)`` when the run has no labels file."""
        if not self.labels_path.is_file():
            return [], None
        try:
            data = json.loads(self.labels_path.read_text(encoding="utf-8"))
            labels = [str(x) for x in data["labels"]]
            thresholds = data.get("thresholds")
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{self.labels_path}: unreadable labels file: {err}") from None
        if thresholds is not None:
            if len(thresholds) != len(labels):
                raise CheckpointError(
                    f"{self.labels_path}: {len(labels)} labels but {len(thresholds)} thresholds"
                )
            thresholds = [float(t) for t in thresholds]
        return labels, thresholds

    def write_shortlist(self, state: dict) -> None:
        """The decoding shortlist's lexical table (:mod:`translate.shortlist`), atomically."""
        save_checkpoint(self.shortlist_path, state)

    def read_shortlist(self) -> dict | None:
        """The saved lexical table, or None for runs trained before shortlists existed."""
        if not self.shortlist_path.is_file():
            return None
        return load_checkpoint(self.shortlist_path)

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


# --------------------------------------------------------------------------- saving


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); harmless to skip where unsupported."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, then rename it into place.

    The temp file is opened with a normal ``open`` (not ``mkstemp``) so it gets the usual
    umask permissions rather than 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# Exact types: subclasses (np.float64 is a float, custom Tensor subclasses) are refused on load.
_PLAIN = frozenset({str, bytes, int, float, complex, bool, type(None), torch.Tensor,
                    torch.nn.Parameter, torch.Size, torch.dtype, torch.device})


def _check_plain(obj: Any, where: str) -> None:
    """Refuse, before writing, anything ``weights_only`` loading would later reject.

    Otherwise a numpy scalar in the metrics would produce a checkpoint that this very
    program refuses to resume from, discovered only after hours of training.
    """
    if type(obj) in _PLAIN:
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            _check_plain(key, f"{where} key {key!r}")
            _check_plain(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple, set, frozenset):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"{where}: {type(obj).__module__}.{type(obj).__qualname__} cannot be stored in a "
        "checkpoint (weights_only loading accepts tensors, dicts, lists, tuples, numbers, "
        "strings); convert it, e.g. with float() / .tolist() / torch.as_tensor()"
    )


def save_checkpoint(path: str | os.PathLike[str], state: dict) -> None:
    """Atomically write ``state`` (plus ``version``) to ``path``.

    Either the new checkpoint is complete under its final name or the previous file is
    untouched; no temp file is left behind on failure.
    """
    path = Path(path)
    payload = {**state, "version": CHECKPOINT_VERSION}
    _check_plain(payload, "state")
    _atomic_write(path, lambda f: torch.save(payload, f))


# --------------------------------------------------------------------------- loading


def _unsafe_globals(path: Path, message: str) -> list[str]:
    found = re.findall(r"GLOBAL ([\w.]+)", message)
    if found:
        return sorted(set(found))
    getter = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if getter is not None:
        with contextlib.suppress(Exception):
            return list(getter(path))
    return []


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing code and bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        msg = str(err)
        if "weights only" in msg.lower() or "weights_only" in msg.lower():
            names = _unsafe_globals(path, msg)
            what = f" ({', '.join(names)})" if names else ""
            raise CheckpointError(
                f"{path}: refusing to load: the file contains Python objects other than plain "
                f"data{what}, which could run code. Only tensors, dicts, lists and numbers are "
                "accepted; this is not a checkpoint written by translate."
            ) from None
        raise CheckpointError(f"{path}: corrupt checkpoint: {err}") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint (could not be read: {first})"
        ) from None
    if not isinstance(state, dict) or "version" not in state:
        raise CheckpointError(f"{path}: not a translate checkpoint (no 'version' entry)")
    version = state["version"]
    if not isinstance(version, int) or not (
        MIN_CHECKPOINT_VERSION <= version <= CHECKPOINT_VERSION
    ):
        newer = isinstance(version, int) and version > CHECKPOINT_VERSION
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} "
            + ("is newer than this build supports" if newer else "is not supported")
            + f"; this build reads versions {MIN_CHECKPOINT_VERSION}..{CHECKPOINT_VERSION}"
            + (" (upgrade translate)" if newer else "")
        )
    return state


# --------------------------------------------------------------------------- RNG state


def capture_rng_state() -> dict:
    """Every RNG a training step touches, as ``weights_only``-safe data."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {
            "version": int(version),
            "state": torch.tensor(mt, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`; CUDA states are skipped when they don't fit."""
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["name"],
            npy["keys"].cpu().numpy().astype(np.uint32),  # a map_location may have moved it
            npy["pos"],
            npy["has_gauss"],
            npy["gauss"],
        )
    )
    cuda = state.get("cuda") or []
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda])
        else:
            log.warning(
                "checkpoint has RNG states for %d CUDA device(s) but %d are visible; "
                "CUDA random streams are not restored",
                len(cuda),
                torch.cuda.device_count() if torch.cuda.is_available() else 0,
            )


# --------------------------------------------------------------------------- averaging


def average_checkpoints(paths: Iterable[str | os.PathLike[str]]) -> dict:
    """Mean of the model weights of several checkpoints (one loaded at a time).

    Floating-point tensors are averaged (accumulated in float64, cast back); integer
    tensors such as counters are taken from the last checkpoint.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("average_checkpoints: no checkpoints given")
    sums: dict[str, torch.Tensor] = {}
    result: OrderedDict[str, torch.Tensor] = OrderedDict()
    reference: Path | None = None
    for path in paths:
        state = load_checkpoint(path)
        model = state.get("model")
        if not isinstance(model, dict):
            raise CheckpointError(f"{path}: checkpoint has no 'model' state dict")
        if reference is None:
            reference = path
            for key, t in model.items():
                result[key] = t
                if t.is_floating_point():
                    sums[key] = t.detach().to(torch.float64).clone()
            continue
        if set(model) != set(result):
            diff = sorted(set(model) ^ set(result))
            raise CheckpointError(
                f"{path}: model parameters differ from {reference}: {', '.join(diff[:5])}"
            )
        for key, t in model.items():
            if t.shape != result[key].shape:
                raise CheckpointError(
                    f"{path}: {key} has shape {tuple(t.shape)} but "
                    f"{tuple(result[key].shape)} in {reference}"
                )
            if key in sums:
                sums[key] += t.detach().to(torch.float64)
            else:
                result[key] = t
    for key, total in sums.items():
        result[key] = (total / len(paths)).to(result[key].dtype)
    return result
