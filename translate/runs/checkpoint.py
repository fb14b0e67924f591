"""Checkpoints: safe to write, safe to read; plus the RNG state and weight averaging.

Where checkpoints go is :class:`translate.runs.rundir.RunDir`'s business. They are written
atomically (temp file in the same directory, fsync, ``os.replace``) so a crash or a full
disk mid-save never destroys the previous good ``last.pt``. They are read with
``torch.load(weights_only=True)`` so a checkpoint downloaded from a stranger cannot run
code: the state is plain data only (tensors, dicts, lists, numbers, strings), which is also
why the RNG states of ``random`` and numpy are converted to tensors/lists before saving.

Checkpoint state keys (by convention; the trainer owns the content):
``version`` (stamped by :func:`save_checkpoint`), ``model``, ``optimizer``, ``scheduler``,
``scaler`` (state dicts), ``progress`` (step, epoch, position in the epoch, ...), ``rng``
(:func:`capture_rng_state`), ``config`` (the resolved config as a dict) and ``thresholds``:
the per-label decision thresholds tuned on validation for exactly these weights, which
inference reads from the checkpoint it loads.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pickle
import random
import re
import secrets
import zipfile
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from translate.errors import TranslateError

log = logging.getLogger(__name__)

# Bump when the meaning of the state changes; loading refuses anything outside
# [MIN_CHECKPOINT_VERSION, CHECKPOINT_VERSION] instead of failing later with a KeyError.
CHECKPOINT_VERSION = 1
MIN_CHECKPOINT_VERSION = 1


class CheckpointError(TranslateError, RuntimeError):
    """A checkpoint or run directory that cannot be used; the message names the file."""


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
    try:
        _atomic_write(path, lambda f: torch.save(payload, f))
    except (OSError, RuntimeError) as err:
        cause = _os_error(err)
        if cause is None:
            raise
        code = errno.errorcode.get(cause.errno or 0, "error")
        kept = f"the previous {path.name} is unchanged" if path.exists() else "nothing was kept"
        raise CheckpointError(
            f"{path}: could not write the checkpoint: {os.strerror(cause.errno or 0)} "
            f"({code}); {kept}. Free space or raise the limit, then resume"
        ) from None


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind ``err``: torch.save reports a failed write (ENOSPC, EDQUOT,
    EFBIG) as a RuntimeError whose context is the OSError that says what happened."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno:
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


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
    if not zipfile.is_zipfile(path):  # torch.save's format; else torch tries an old pickle
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint: {_not_a_zip(path)} "
                              "(checkpoints are PyTorch zip archives)")
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


def _not_a_zip(path: Path) -> str:
    """What a file that is not a zip archive looks like, for the error message."""
    with path.open("rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    if head.startswith(b"PK"):
        return "a zip archive cut short (its directory is missing)"
    try:
        text = head.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "not a zip archive"
    return f"a text file, starting {text.splitlines()[0][:40]!r}" if text else "a blank file"


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
