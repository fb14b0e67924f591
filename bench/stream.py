"""Streaming benchmark: infer's peak RSS on 1k and 1M input lines; about an hour (the 1M lines).

Peak RSS of ``python -m translate.infer`` on a small and a large input.

``infer`` reads and writes in bounded chunks, so its peak memory should not grow with the
input: the target is the 1M-line peak within 50 MB of the 1,000-line one. Each size
is one whole CLI run in its own process (start-up and model load included, output to
/dev/null); the peak is that child's ``ru_maxrss`` from ``os.wait4``. The input repeats the
lines of Multi30k test_2016_flickr.de. Prints one JSON object on stdout. Greedy decoding runs
at about 300 lines/s on 2 CPU cores, so the default 1M lines take about an hour; ``--large
20000`` takes about 2 minutes.

    python -m bench stream --model runs/multi30k [--small 1000] [--large 1000000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.de"


def write_input(path: Path, source: Path, lines: int) -> None:
    sentences = source.read_text(encoding="utf-8").splitlines()
    with path.open("w", encoding="utf-8") as f:
        for sentence in itertools.islice(itertools.cycle(sentences), lines):
            f.write(sentence + "\n")


def run_infer(model: str, src: Path, extra: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one ``infer`` run on ``src``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    # stderr goes to a file, not a pipe: a long input's warnings would fill a pipe nobody
    # reads until the end and block the child.
    with open(os.devnull, "wb") as sink, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "translate.infer", "--model", model,
                                 "--input", str(src), *extra],
                                stdout=sink, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            sys.exit(f"infer failed on {src}: {err.read().decode(errors='replace')[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start  # Linux: KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="run directory")
    p.add_argument("--source", default=str(DEFAULT_SOURCE), help="sentences to repeat")
    p.add_argument("--small", type=int, default=1000, help="lines of the small input")
    p.add_argument("--large", type=int, default=1_000_000, help="lines of the large input")
    p.add_argument("--beam", type=int, default=1, help="beam size (1: greedy, fastest)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = p.parse_args()
    extra = ["--beam", str(args.beam), "--threads", str(args.threads)]
    result = {"model": args.model, "beam": args.beam, "host_cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        for name, lines in (("small", args.small), ("large", args.large)):
            src = Path(tmp) / f"{name}.txt"
            write_input(src, Path(args.source), lines)
            rss, wall = run_infer(args.model, src, extra)
            result[name] = {"lines": lines, "peak_rss_mb": round(rss, 1),
                            "seconds": round(wall, 1), "lines_per_s": round(lines / wall, 1)}
            src.unlink()
    result["rss_growth_mb"] = round(result["large"]["peak_rss_mb"]
                                    - result["small"]["peak_rss_mb"], 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
