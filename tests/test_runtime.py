"""Runtime choices: the precision `auto` picks per machine; glibc malloc reuse for int8."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from translate.runtime import (
    RuntimeSetupError,
    choose_precision,
    cpu_bf16_unit,
    resolve_precision,
)

ROOT = Path(__file__).resolve().parents[1]

# Allocates and frees a 40 MB tensor 20 times (glibc maps anything above 32 MB afresh by
# default, whatever its dynamic threshold) and prints the page faults of each round.
_FAULTS = """
import resource, torch
from translate.runtime import retain_freed_memory
applied = retain_freed_memory()
torch.ones(10)
counts = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(10_000_000)
    del block
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *counts)
"""


def _faults(**env: str) -> tuple[bool, list[int]]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", _FAULTS], env={**clean, **env}, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", [int(n) for n in out[1:]]


needs_glibc = pytest.mark.skipif(
    not (hasattr(os, "confstr") and "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or "")),
    reason="mallopt is glibc's",
)


@needs_glibc
def test_retained_memory_is_reused_without_new_page_faults():
    applied, counts = _faults()
    assert applied
    # A round that maps its block afresh faults 9,766 pages. With the setting glibc still
    # maps afresh a few times while its heap grows (6-7 of 20 rounds here), then reuses.
    assert sum(n > 5000 for n in counts) <= 10, counts
    assert max(counts[-5:]) < 500, counts


@needs_glibc
def test_without_the_setting_every_round_faults_its_pages_again():
    applied, counts = _faults(MALLOC_ARENA_MAX="4")  # an unrelated MALLOC_ variable
    assert applied  # only the two thresholds count as the user's own choice
    applied, counts = _faults(MALLOC_TRIM_THRESHOLD_="131072")
    assert not applied
    assert sum(n > 5000 for n in counts) >= 18, counts


# --------------------------------------------------------------------------- precision

AMX_CPU = {"avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_tile": True,
           "amx_bf16": True, "cpu_name": "Intel Xeon (Sapphire Rapids)"}
AVX512_BF16_CPU = {"avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_tile": False,
                   "amx_bf16": False, "cpu_name": "AMD EPYC (Zen 4)"}
PLAIN_CPU = {"avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_tile": False,
             "amx_bf16": False, "cpu_name": "an AVX2-only host"}


def test_cpu_bf16_unit_reads_the_amx_and_avx512_bf16_flags():
    assert cpu_bf16_unit(AMX_CPU) == "amx"
    assert cpu_bf16_unit(AVX512_BF16_CPU) == "avx512_bf16"
    assert cpu_bf16_unit(PLAIN_CPU) is None
    assert cpu_bf16_unit({"amx_tile": True}) is None  # tiles without bf16 (int8-only AMX)
    assert cpu_bf16_unit(torch.cpu.get_capabilities()) in ("amx", "avx512_bf16", None)


def test_auto_on_cuda_is_bf16_where_supported_else_fp16():
    assert choose_precision("auto", "cuda", cuda_bf16=True)[0] == torch.bfloat16
    dtype, reason = choose_precision("auto", "cuda", cuda_bf16=False)
    assert dtype == torch.float16 and "GradScaler" in reason
    assert choose_precision("fp32", "cuda", cuda_bf16=True)[0] == torch.float32


def test_auto_on_an_amx_cpu_is_bf16():
    dtype, reason = choose_precision("auto", "cpu", cpu_caps=AMX_CPU)
    assert dtype == torch.bfloat16 and "amx" in reason


def test_auto_on_a_cpu_without_native_bf16_stays_fp32():
    dtype, reason = choose_precision("auto", "cpu", cpu_caps=PLAIN_CPU)
    assert dtype == torch.float32 and "no native bf16" in reason


def test_auto_with_avx512_bf16_but_no_amx_is_bf16_as_measured():
    """bf16 ran 1.4-1.7x fp32 on such a host (AMD EPYC Zen 4), training and decoding."""
    dtype, reason = choose_precision("auto", "cpu", cpu_caps=AVX512_BF16_CPU)
    assert dtype == torch.bfloat16 and "avx512_bf16" in reason


@pytest.mark.parametrize("caps", [AMX_CPU, AVX512_BF16_CPU, PLAIN_CPU])
def test_fp32_and_bf16_can_be_forced_on_any_cpu_and_fp16_is_refused(caps):
    assert choose_precision("fp32", "cpu", cpu_caps=caps)[0] == torch.float32
    dtype, reason = choose_precision("bf16", "cpu", cpu_caps=caps)
    assert dtype == torch.bfloat16
    assert ("emulated" in reason) == (caps is PLAIN_CPU)
    with pytest.raises(RuntimeSetupError, match="'fp16' needs a CUDA device"):
        choose_precision("fp16", "cpu", cpu_caps=caps)


def test_resolve_precision_logs_the_choice_and_why_for_this_machine(caplog):
    with caplog.at_level(logging.INFO, logger="translate.runtime"):
        dtype = resolve_precision("auto", torch.device("cpu"))
    expected = choose_precision("auto", "cpu", cpu_caps=torch.cpu.get_capabilities())
    assert dtype == expected[0]
    assert caplog.messages == [f"precision {str(dtype).removeprefix('torch.')}: {expected[1]}"]
