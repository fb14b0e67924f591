"""Device, precision and thread choices shared by training and inference.

Kept apart from the trainer so that `infer` makes exactly the same choices (and gives the
same one-line errors) without importing the training loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from translate.errors import TranslateError


class RuntimeSetupError(TranslateError, RuntimeError):
    """The requested device or precision cannot be used on this machine."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeSetupError(
            f"device {name!r} was asked for, but no CUDA GPU is visible "
            "(torch.cuda.is_available() is False); use --device cpu"
        )
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """bf16 autocast by default on CUDA (no scaler needed), fp32 on CPU."""
    if device.type != "cuda":
        if name in ("bf16", "fp16"):
            raise RuntimeSetupError(f"precision {name!r} needs a CUDA device; use fp32 on CPU")
        return torch.float32
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(num_threads: int) -> None:
    """0 keeps torch's default (all cores); tests and benchmarks pin it for repeatability."""
    if num_threads > 0:
        torch.set_num_threads(num_threads)


@contextlib.contextmanager
def threads_per_worker(workers: int) -> Iterator[None]:
    """Split torch's CPU threads among ``workers`` concurrent batches, restoring them after."""
    total = torch.get_num_threads()
    torch.set_num_threads(max(1, total // workers))
    try:
        yield
    finally:
        torch.set_num_threads(total)


# glibc's mallopt() parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or not glibc
        return False


def retain_freed_memory(mmap_mb: int = 64, trim_mb: int = 256) -> bool:
    """Make glibc's malloc reuse freed blocks of up to ``mmap_mb`` instead of mapping fresh
    pages for each one; returns whether the setting was applied.

    Int8 search allocates several 10-40 MB buffers per step (fp32 logits, fbgemm's int32
    accumulators, quantized activations). Above glibc's dynamic mmap threshold each is a
    fresh ``mmap`` whose pages are faulted in and zeroed again: ~750k page faults and ~10%
    of int8 beam-5 time on test2016. Serving blocks below 64 MB from the heap, and returning
    the heap's free top to the OS only past 256 MB, cut that to ~120k faults (172-176 ->
    189-191 sentences/s at batch 128, peak RSS unchanged within 20 MB). fp32 search and
    training gained nothing measurable and kept up to 130 MB more, so only int8 inference
    asks for it. Settings the user made (``MALLOC_*_`` variables, ``GLIBC_TUNABLES``) win;
    other C libraries are left alone.
    """
    if any(name in os.environ for name in _MALLOC_ENV):
        return False
    if "malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if not _glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_mb << 20)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_mb << 20)
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def configure_cuda() -> None:
    """cuDNN autotuning for LSTMs and TF32 matmuls: free speed, no accuracy we rely on."""
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
