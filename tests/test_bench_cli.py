"""``python -m bench``: the list names every benchmark module with its one-line summary, and
every benchmark answers ``--help`` (nothing is measured or trained)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_"))


def _bench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_list_names_every_benchmark_and_each_answers_help() -> None:
    assert len(NAMES) >= 10
    for args in ((), ("--help",)):
        listing = _bench(*args)
        assert listing.returncode == 0, listing.stderr
        rows = {line.split()[0]: line for line in listing.stdout.splitlines()
                if line.startswith("  ")}
        assert sorted(rows) == NAMES, listing.stdout
        for row in rows.values():  # a summary with how long it takes
            assert len(row.split(None, 1)) == 2 and ("min" in row or "hour" in row), row
    failed = {}
    for name in NAMES:
        proc = _bench(name, "--help")
        if proc.returncode or f"python -m bench {name}" not in proc.stdout:
            failed[name] = (proc.returncode, proc.stdout[-500:] + proc.stderr[-2000:])
    assert not failed, failed


def test_an_unknown_name_is_a_usage_error() -> None:
    proc = _bench("no_such_benchmark")
    assert proc.returncode == 2
    assert "no benchmark 'no_such_benchmark'" in proc.stderr and "train" in proc.stderr
