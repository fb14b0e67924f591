"""Device, precision and thread choices shared by training and inference.

Kept apart from the trainer so that `infer` makes exactly the same choices (and gives the
same one-line errors) without importing the training loop.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from translate.config import DEVICE_HELP, DEVICE_PATTERN
from translate.errors import TranslateError


class RuntimeSetupError(TranslateError, RuntimeError):
    """The requested device or precision cannot be used on this machine."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without a GPU (or for a GPU index
    that is not there) is a clear error. Training and inference both come through here."""
    if DEVICE_PATTERN.fullmatch(name) is None:
        raise RuntimeSetupError(f"device {name!r}: expected {DEVICE_HELP}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeSetupError(
            f"device {name!r} was asked for, but no CUDA GPU is visible "
            "(torch.cuda.is_available() is False); use --device cpu"
        )
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeSetupError(f"device {name!r} was asked for, but only "
                                f"{torch.cuda.device_count()} CUDA GPU(s) are visible")
    return device


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


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators. (Python's string-hash seed is not among
    them: it is fixed when the interpreter starts, so only ``PYTHONHASHSEED`` exported before
    then can set it.)"""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def configure_cuda() -> None:
    """cuDNN autotuning for LSTMs and TF32 matmuls: free speed, no accuracy we rely on."""
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
