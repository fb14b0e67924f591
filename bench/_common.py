"""Shared pieces of the benchmarks: config with data overrides, GEMM peak, RSS, load, the
precision axis (parsing, interleaved order, ratios to fp32) and the CPU's capability.

Both benchmarks build the real :class:`~translate.training.trainer.Trainer` from a YAML
config, so what they time is exactly what ``python -m translate.train`` runs. Peer figures
are not here: they are read, with the host they were measured on, by ``bench._peers``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "multi30k"


def load_config(path: Path, data: Path, run_dir: Path, overrides: dict):
    """The YAML at ``path`` with the Multi30k prefixes pointed at ``data`` and a nested
    ``overrides`` mapping merged in (section -> key -> value)."""
    from translate import config

    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for split, name in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr")):
        for src in raw["data"][split]:
            src["prefix"] = str(data / name)
    raw.setdefault("training", {})["run_dir"] = str(run_dir)
    raw.setdefault("logging", {})["wandb"] = "disabled"
    for section, values in overrides.items():
        target = raw.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict):
                target.setdefault(key, {}).update(value)
            else:
                target[key] = value
    return config.from_dict(raw)


def pin_threads(threads: int) -> None:
    """Pin intra-op threads (and inter-op to 1: nothing here runs ops concurrently)."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (interop threads can only be set once per process)
        pass


def best_seconds(fn, device: torch.device, reps: int, warmup: bool = True) -> float:
    """Fastest of ``reps`` timed calls of ``fn`` (after one untimed call when ``warmup``),
    synchronising a CUDA device around each so its asynchronous kernels are counted."""
    if warmup:
        fn()
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


class GemmProbe:
    """Times one fp32 ``torch.mm`` of two n x n matrices: the machine's matrix-multiply rate
    right now. The matrices are made once, so probing between training steps costs one GEMM
    and no allocation."""

    def __init__(self, device: torch.device, n: int = 2048) -> None:
        self.device, self.n = device, n
        self.a = torch.randn(n, n, device=device)
        self.b = torch.randn(n, n, device=device)
        torch.mm(self.a, self.b)  # warm-up

    def gflops(self) -> float:
        seconds = best_seconds(lambda: torch.mm(self.a, self.b), self.device, 1, warmup=False)
        return 2 * self.n**3 / seconds / 1e9


def gemm_peak_gflops(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """Best-of-``reps`` fp32 ``torch.mm`` n³ rate in this process (the roofline we compare to)."""
    probe = GemmProbe(device, n)
    return max(probe.gflops() for _ in range(reps))


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# Flags that decide how fast fp32 and bf16 products run on an x86 CPU.
_CPU_FLAGS = ("avx2", "avx512_f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16",
              "amx_int8")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
BASE_PRECISION = "fp32"


def parse_precisions(text: str, allowed: Sequence[str] = PRECISIONS) -> list[str]:
    """``"fp32,bf16"`` -> ``["fp32", "bf16"]``, in the order given (the first round runs them
    in that order). An argparse ``type``: a bad value is a one-line usage error."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no precision given (e.g. fp32,bf16)")
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown precision {', '.join(unknown)}; choose "
                                         f"from {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"precision listed twice in {text!r}")
    return names


def abba(items: Sequence, round_index: int) -> list:
    """``items`` in round ``round_index``'s order: as given in even rounds, reversed in odd
    ones, so a drift of a shared host's load over two rounds hits every item alike."""
    return list(items) if round_index % 2 == 0 else list(items)[::-1]


def base_precision(precisions: Sequence[str]) -> str:
    """What ratios are taken against: fp32 when measured, else the first precision given."""
    return BASE_PRECISION if BASE_PRECISION in precisions else precisions[0]


def round_ratios(rates: dict[tuple[int, str], float], precisions: Sequence[str]) -> dict:
    """Each precision's rate over the base precision's (:func:`base_precision`), round by
    round (``rates`` maps (round, precision) to a rate measured in that round), and their
    median: a ratio within one round compares runs that met the same load. Rounds missing a
    side are left out."""
    base = base_precision(precisions)
    rounds = sorted({rnd for rnd, _ in rates})
    out = {}
    for name in precisions:
        if name == base:
            continue
        each = [round(rates[rnd, name] / rates[rnd, base], 3) for rnd in rounds
                if rates.get((rnd, name)) and rates.get((rnd, base))]
        out[f"{name}/{base}"] = {"per_round": each,
                                 "median": round(statistics.median(each), 3) if each else None}
    return out


def cpu_capability(caps: dict | None = None) -> dict:
    """What a figure was measured on: the CPU's name and cores, its matrix-unit flags (cpuid,
    via ``torch.cpu.get_capabilities``), torch's kernel dispatch level and the bf16 unit that
    ``precision: auto`` sees. Printed with every result so a number says where it came from.
    ``caps``: another machine's ``torch.cpu.get_capabilities()`` (tests); the model name then
    comes from it alone."""
    import platform

    from translate.runtime import JOBS, choose_precision, cpu_bf16_unit

    own = caps is None
    caps = torch.cpu.get_capabilities() if own else caps
    auto = {job: str(choose_precision("auto", "cpu", cpu_caps=caps, job=job)[0]
                     ).removeprefix("torch.") for job in JOBS}
    return {"model": caps.get("cpu_name") or (platform.processor() if own else "") or "unknown",
            "cores": caps.get("num_physical_cores"),
            "flags": [f for f in _CPU_FLAGS if caps.get(f)],
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability() if own else None,
            "bf16_unit": cpu_bf16_unit(caps),
            "auto_precision": auto}


def cpu_line(cpu: dict) -> str:
    """One human line for :func:`cpu_capability`'s result."""
    return (f"CPU: {cpu['model']} ({cpu['cores']} cores); flags {' '.join(cpu['flags'])}; "
            f"torch {cpu['torch_cpu_capability']}; native bf16: {cpu['bf16_unit'] or 'none'} "
            "(precision auto: " + ", ".join(f"{job} {dtype}" for job, dtype
                                            in cpu["auto_precision"].items()) + ")")


def add_training_run_arguments(ap: argparse.ArgumentParser, *, precisions: list[str],
                               several: str, rounds_help: str) -> None:
    """``--threads``, ``--device``, ``--precisions`` and ``--rounds``, spelled once for the
    benchmarks that train (``train``, ``quality``)."""
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precisions", "--precision", dest="precisions", type=parse_precisions,
                    default=precisions, metavar="P[,P...]",
                    help=f"fp32, bf16, fp16, auto; several {several}")
    ap.add_argument("--rounds", type=int, default=1, help=rounds_help)
