"""Process-wide runtime settings: glibc malloc reuse for int8 inference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
