"""Device, precision and thread choices shared by training and inference.

Kept apart from the trainer so that `infer` makes exactly the same choices (and gives the
same one-line errors) without importing the training loop.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator, Mapping

import numpy as np
import torch

from translate.config import DEVICE_HELP, DEVICE_PATTERN
from translate.errors import TranslateError

log = logging.getLogger("translate.runtime")


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


def cpu_bf16_unit(caps: Mapping[str, object]) -> str | None:
    """The CPU's native bf16 matrix unit, from ``torch.cpu.get_capabilities()``-style flags.

    ``"amx"``: AMX tiles with bf16 (TDPBF16PS, whole tile products; Sapphire Rapids and
    later); ``"avx512_bf16"``: bf16 dot products in AVX-512 registers (VDPBF16PS; Cooper
    Lake, AMD Zen 4); ``None``: bf16 is only emulated (converted to fp32 and back).

    Why these flags and not a probe: torch reads them with cpuid through cpuinfo (the same
    bits oneDNN dispatches its bf16 kernels on), for free and without timing noise; a GEMM
    probe on a shared 2-core host drifts by 2x within a minute. ``get_cpu_capability()``
    says only "AVX512" on both kinds, so it is reported, not used.
    """
    if caps.get("amx_tile") and caps.get("amx_bf16"):
        return "amx"
    if caps.get("avx512_bf16"):
        return "avx512_bf16"
    return None


# What ``precision: auto`` picks on a CPU, by its native bf16 unit and the job. A row turns
# bf16 on only where it was measured faster than fp32 and as good (docs/performance.md,
# "Which precision auto picks", has the figures and the CPU of each). AMX trains in fp32:
# there bf16 training was slower with oneDNN's per-shape kernels rebuilt all the time, and
# the bf16-trained default model decoded 4.9 BLEU worse than the fp32 one; greedy decoding
# on AMX was slower in bf16 (0.73x), beam search faster (1.31x, same BLEU).
JOBS = ("train", "beam", "greedy")
CPU_AUTO_BF16: dict[str | None, frozenset[str]] = {
    "avx512_bf16": frozenset({"train", "beam", "greedy"}),
    "amx": frozenset({"beam"}),
    None: frozenset(),  # no native bf16: emulated products only cost
}


def decoding_job(beam: int) -> str:
    """The job ``auto`` is chosen for when decoding with beam size ``beam``."""
    return "greedy" if beam <= 1 else "beam"


def choose_precision(name: str, device_type: str, *, cuda_bf16: bool = False,
                     cpu_caps: Mapping[str, object] | None = None,
                     job: str = "train") -> tuple[torch.dtype, str]:
    """The autocast dtype for ``name`` on ``device_type`` and why; pure, so tests can give
    any machine's flags.

    CUDA: ``auto`` is bf16 where supported (no scaler needed), else fp16 with a scaler.
    CPU: ``auto`` is bf16 where :func:`cpu_bf16_unit` finds a native unit *and*
    :data:`CPU_AUTO_BF16` says bf16 paid for that ``job`` (``train``, ``beam`` or
    ``greedy`` decoding) on that unit; fp32 elsewhere, so ``auto`` is never slower or worse
    than fp32 where it was measured. Without a unit bf16 is converted to fp32 and back
    around every product, so it only costs; ``bf16`` can still be forced -- except where
    :func:`cpu_bf16_lstm_supported` says the LSTMs cannot run in bf16 at all (AVX2-only
    CPUs): there it is a clear error. fp16 is refused on the CPU: its CPU products are
    emulated too, and its range would need a GradScaler that the CPU path does not run.
    """
    if job not in JOBS:
        raise ValueError(f"job {job!r}: expected one of {', '.join(JOBS)}")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if device_type == "cuda":
        if name != "auto":
            return dtypes[name], f"{name} as configured"
        if cuda_bf16:
            return torch.bfloat16, "auto: this GPU supports bf16"
        return torch.float16, "auto: this GPU has no bf16, fp16 with a GradScaler"
    if device_type != "cpu":
        if name in ("bf16", "fp16"):
            raise RuntimeSetupError(f"precision {name!r} is not supported on {device_type!r}; "
                                    "use fp32")
        return torch.float32, f"fp32 on {device_type}"
    if name == "fp16":
        raise RuntimeSetupError("precision 'fp16' needs a CUDA device; on the CPU use bf16 "
                                "or fp32")
    unit = cpu_bf16_unit(cpu_caps or {})
    lstm_ok = cpu_bf16_lstm_supported(cpu_caps or {})
    if name == "fp32":
        return torch.float32, "fp32 as configured"
    if name == "bf16":
        if not lstm_ok:
            raise RuntimeSetupError(
                "precision 'bf16': this CPU cannot run LSTMs in bf16 (oneDNN's bf16 LSTM needs "
                "AVX-512 or AMX, and this CPU has neither); use fp32 or auto")
        if unit is None:
            return torch.bfloat16, ("bf16 as configured, but this CPU has no native bf16 "
                                    "(emulated: expect it slower than fp32)")
        return torch.bfloat16, f"bf16 as configured (CPU has {unit})"
    unit = unit if lstm_ok else None  # a unit the LSTMs cannot use is no unit for auto
    what = {"train": "training", "beam": "beam search", "greedy": "greedy decoding"}[job]
    if job in CPU_AUTO_BF16[unit]:
        return torch.bfloat16, f"auto: this CPU has native bf16 ({unit}), faster for {what}"
    if unit is None:
        return torch.float32, ("auto: this CPU has no native bf16 (neither avx512_bf16 nor "
                               "amx_bf16)")
    return torch.float32, (f"auto: this CPU has native bf16 ({unit}), but {what} was not "
                           f"faster and as good in bf16 there (docs/performance.md)")


def precision_choice(name: str, device: torch.device,
                     job: str = "train") -> tuple[torch.dtype, str]:
    """:func:`choose_precision` with this machine's GPU and CPU flags."""
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    caps = torch.cpu.get_capabilities() if device.type == "cpu" else None
    return choose_precision(name, device.type, cuda_bf16=cuda_bf16, cpu_caps=caps, job=job)


def cpu_bf16_lstm_supported(caps: Mapping[str, object]) -> bool:
    """Whether ``nn.LSTM`` can run under CPU bf16 autocast, from the CPU's flags.

    Autocast sends CPU LSTMs (unpacked, and packed batches whose sentences all have one length:
    length-bucketed batches often, a single sentence always) to oneDNN, whose bf16 LSTM needs
    AVX-512 (its ``avx512_core``: F, BW, VL, DQ) or AMX; on an AVX2-only CPU the call fails
    deep inside a step. Flags, not a trial call: a failed oneDNN call leaves the process's
    later fp32 LSTM results changed in the last bits.
    """
    core = all(caps.get(f) for f in ("avx512_f", "avx512_bw", "avx512_vl", "avx512_dq"))
    return bool(core or caps.get("amx_bf16"))


def resolve_precision(name: str, device: torch.device, job: str = "train") -> torch.dtype:
    """The autocast dtype for ``name`` on ``device`` for ``job``; logs the choice and its
    reason."""
    dtype, reason = precision_choice(name, device, job)
    log.info("precision %s: %s", str(dtype).removeprefix("torch."), reason)
    return dtype


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
