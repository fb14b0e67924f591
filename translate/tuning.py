"""Process-wide tuning: environment variables and allocator settings for CPU runs.

Each setting changes the whole process, not just our code, so library code never applies
one: the command-line entry points (``python -m translate.train`` / ``.infer`` / ``.data``
and the benchmark scripts) do, and a program that embeds ``translate`` may opt in with
:func:`apply_process_tuning`. A setting the user already made (an exported variable, a
``GLIBC_TUNABLES`` malloc entry) always wins. Measurements behind each choice are in
docs/benchmarks.md.

This module imports neither torch nor anything that does: the variables must be in place
before torch loads MKL and before its first CPU LSTM call.
"""

from __future__ import annotations

import ctypes
import os

ONEDNN_CACHE_VAR = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
MKL_FAST_MM_VAR = "MKL_DISABLE_FAST_MM"

# glibc's mallopt() parameter numbers (malloc.h) and the variables that set the same knobs.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _setdefault(name: str, value: str) -> bool:
    """Set ``name`` unless the user did; returns whether it was set here."""
    if name in os.environ:
        return False
    os.environ[name] = value
    return True


def bound_onednn_cache(capacity: int = 16) -> bool:
    """Cap oneDNN's cache of compiled primitives; returns whether the variable was set here.

    torch's CPU LSTM kernels (oneDNN) compile one primitive per input shape, each with its own
    scratch memory, and keep up to 1024 of them. Length-bucketed batches have hundreds of
    distinct (batch, length) shapes that are rarely reused, so without a bound a training run
    grows by hundreds of MB; re-creating an evicted primitive costs far less than a step.
    oneDNN reads the variable once, at its first primitive: call this before torch's first
    CPU LSTM call (in practice, before importing torch).
    """
    return _setdefault(ONEDNN_CACHE_VAR, str(capacity))


def disable_mkl_fast_mm() -> bool:
    """Turn off MKL's cache of GEMM packing buffers; returns whether the variable was set here.

    For inference the cache holds memory (peak RSS of the whole ``infer`` command) and buys
    no measurable speed. MKL reads the variable when it is loaded, i.e. when torch is first
    imported: call this before that.
    """
    return _setdefault(MKL_FAST_MM_VAR, "1")


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or not glibc
        return False


def retain_freed_memory(mmap_mb: int = 64, trim_mb: int = 256) -> bool:
    """Make glibc's malloc reuse freed blocks of up to ``mmap_mb`` instead of mapping fresh
    pages for each one; returns whether the setting was applied.

    Int8 search allocates several buffers of tens of MB per step (fp32 logits, fbgemm's int32
    accumulators, quantized activations). Above glibc's mmap threshold each one is a fresh
    ``mmap`` whose pages are faulted in and zeroed again, a visible share of a step that int8
    makes fast. Serving such blocks from the heap, and returning the heap's free top to the
    OS only past ``trim_mb``, removes most of those faults at the same peak memory. fp32
    search and training gained nothing measurable and kept more memory, so only int8
    inference asks for it. Settings the user made (``MALLOC_*_`` variables,
    ``GLIBC_TUNABLES``) win; other C libraries are left alone. It applies to what is freed
    from the call on: ``infer --quantize`` calls it once the model is loaded.
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


def apply_process_tuning(*, inference: bool = False) -> dict[str, bool]:
    """Set the variables the command-line entry points set; returns what was set here.

    For a program that embeds ``translate`` (e.g. a service around ``Translator``) and wants
    what ``python -m translate.train`` / ``.infer`` do. Call it first, before torch is
    imported: always the oneDNN cache bound; with ``inference`` also MKL's buffer cache off.
    Variables the user exported are left as they are (their entry here is False). Int8
    inference adds :func:`retain_freed_memory`, called once the model is loaded.
    """
    applied = {ONEDNN_CACHE_VAR: bound_onednn_cache()}
    if inference:
        applied[MKL_FAST_MM_VAR] = disable_mkl_fast_mm()
    return applied
