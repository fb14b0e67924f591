"""Inference benchmark: greedy vs beam, batch sizes, fp32/bf16 vs dynamic int8, plus a full CLI run.

Translates Multi30k test_2016_flickr.de with a run directory and prints one JSON object
(stdout) and a human summary (stderr). Throughput counts decoding only (the model is loaded
once per precision, outside the clock); the CLI number is the wall clock of a whole
``python -m translate.infer`` command, start-up included, as a user sees it. Precisions are
interleaved: every (beam, batch, workers) point runs each of them in turn, so a change in the
host's load hits them alike. The CPU's capability is printed with the results.

    python scripts/bench_infer.py --model runs/multi30k [--threads 2] [--limit 0]
                                  [--precision fp32 bf16] [--no-quantize]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _bench_common import PEER_INFER, cpu_capability, cpu_line, peak_rss_mb  # noqa: E402

from translate.metrics import bleu_chrf  # noqa: E402
from translate.runtime import set_threads  # noqa: E402
from translate.translator import Translator  # noqa: E402

DATA = Path(os.environ.get("BENCH_DATA", ROOT.parent / "shared" / "data" / "multi30k"))

# Issue targets as multiples of the best peer's decoding-only rate: (precision, beam) -> ratio.
TARGET_VS_PEER = {("fp32", 1): 2.0, ("fp32", 5): 1.5, ("int8-dynamic", 5): 3.0}
# ... and of its whole default command (beam 5), start-up included.
TARGET_WHOLE_VS_PEER = 2.0


def bench(translator: Translator, src: list[str], ref: list[str], beam: int,
          batch_size: int, workers: int) -> dict:
    translator.translate(src[:batch_size * workers], beam=beam, batch_size=batch_size,
                         workers=workers)  # warm-up
    start = time.perf_counter()
    out = translator.translate(src, beam=beam, batch_size=batch_size, workers=workers)
    seconds = time.perf_counter() - start
    hyps = [r.text for r in out]
    tokens = sum(len(ids) for ids in translator.tokenizer.encode_tgt(hyps))
    scores = bleu_chrf(hyps, ref)
    return {"beam": beam, "batch_size": batch_size, "workers": workers,
            "seconds": round(seconds, 3),
            "sentences_per_s": round(len(src) / seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1), "bleu": scores["bleu"],
            "chrf": scores["chrf"], "peak_rss_mb": round(peak_rss_mb(), 1)}


def vs_peer(row: dict) -> dict:
    """The row's ratio to the best peer's decoding-only rate and the issue's target ratio."""
    peer = PEER_INFER.get(row["beam"])
    ratio = None if peer is None else round(row["sentences_per_s"] / peer["decoding"], 3)
    return {"vs_best_peer": ratio, "target_vs_peer": TARGET_VS_PEER.get((row["precision"],
                                                                         row["beam"]))}


# Runs ``python -m translate.infer ARGS`` and, at exit, writes the process's peak RSS (VmHWM
# of its own address space; ru_maxrss would include the forking parent's pages) to $BENCH_HWM.
_HWM_WRAPPER = """
import atexit, os, runpy, sys
def _hwm():
    with open('/proc/self/status') as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))
    with open(os.environ['BENCH_HWM'], 'w') as f:
        f.write(str(kb))
atexit.register(_hwm)
sys.argv = ['translate.infer', *sys.argv[1:]]
runpy.run_module('translate.infer', run_name='__main__', alter_sys=True)
"""


def cli_wall_clock(model: str, src_path: Path, threads: int, device: str) -> dict:
    """One whole default ``infer`` command: wall clock with start-up, and its own peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        out, hwm = Path(tmp) / "out.txt", Path(tmp) / "hwm"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads),
               "BENCH_HWM": str(hwm)}
        args = ["--model", model, "--input", str(src_path), "--output", str(out), "--threads",
                str(threads), "--device", device]
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _HWM_WRAPPER, *args], env=env,
                              capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"bench_infer: the CLI failed:\n{proc.stderr}")
        lines = out.read_text(encoding="utf-8").count("\n")
        rss_mb = int(hwm.read_text()) / 1024 if hwm.is_file() else float("nan")
    return {"command": "-m translate.infer " + " ".join(args), "seconds": round(seconds, 2),
            "lines": lines, "peak_rss_mb": round(rss_mb, 1)}


def cli_runs(model: str, src_path: Path, threads: int, device: str, runs: int) -> dict:
    """The whole command ``runs`` times: the median wall clock against the peer's (beam 5, the
    default), and the largest peak RSS. One run on a shared host can be off by 20-40%."""
    each = [cli_wall_clock(model, src_path, threads, device) for _ in range(max(1, runs))]
    seconds = statistics.median(r["seconds"] for r in each)
    lines = each[0]["lines"]
    return {"command": each[0]["command"], "lines": lines, "seconds": seconds,
            "seconds_each": [r["seconds"] for r in each],
            "lines_per_s": round(lines / seconds, 1),
            "vs_best_peer": round(lines / seconds / PEER_INFER[5]["whole"], 3),
            "target_vs_peer": TARGET_WHOLE_VS_PEER,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in each),
            "peak_rss_mb_each": [r["peak_rss_mb"] for r in each]}


def _ratio(row: dict) -> str:
    if row.get("vs_best_peer") is None:
        return ""
    target = row.get("target_vs_peer")
    return f"  {row['vs_best_peer']:.2f}x best peer" + (f" (target {target}x)" if target else "")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="run directory")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-sizes", default="64,128,256")
    p.add_argument("--workers", default="1,2", help="concurrent CPU batches to try")
    p.add_argument("--beams", default="1,5")
    p.add_argument("--limit", type=int, default=0, help="first N test sentences (0 = all)")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "auto"],
                   help="autocast precisions to compare (int8 runs in fp32 besides them)")
    p.add_argument("--no-quantize", action="store_true", help="skip the int8 runs")
    p.add_argument("--no-cli", action="store_true", help="skip the whole-command timing")
    p.add_argument("--cli-runs", type=int, default=3,
                   help="times to run the whole command (the median is reported)")
    args = p.parse_args()
    set_threads(args.threads)

    src_path = DATA / "test_2016_flickr.de"
    src = src_path.read_text(encoding="utf-8").splitlines()
    ref = (DATA / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    if args.limit:
        src, ref = src[:args.limit], ref[:args.limit]
    variants = [(precision, False) for precision in args.precision]
    if not args.no_quantize and args.device == "cpu":
        variants.append(("fp32", True))
    translators, load_s = {}, {}
    for precision, quantize in variants:
        start = time.perf_counter()
        translators[precision, quantize] = Translator.load(
            args.model, device=args.device, quantize=quantize, precision=precision)
        load_s[precision, quantize] = round(time.perf_counter() - start, 2)
    grid = [(beam, bs, w) for beam in _ints(args.beams) for w in _ints(args.workers)
            for bs in _ints(args.batch_sizes) if w == 1 or args.device == "cpu"]
    runs = []
    for n, (beam, bs, w) in enumerate(grid):
        point = {}
        for precision, quantize in variants[::-1 if n % 2 else 1]:  # ABBA: drift hits all
            tr = translators[precision, quantize]
            name = "int8-dynamic" if quantize else str(tr.dtype).removeprefix("torch.")
            name = {"float32": "fp32", "bfloat16": "bf16"}.get(name, name)
            row = {"precision": name, "precision_asked": precision,
                   "load_s": load_s[precision, quantize], **bench(tr, src, ref, beam, bs, w)}
            row.update(vs_peer(row))
            point[precision, quantize] = row
        base = point.get(("fp32", False))
        for key in variants:
            row = point[key]
            if base is not None and row is not base:
                row["vs_fp32"] = round(row["sentences_per_s"] / base["sentences_per_s"], 3)
            runs.append(row)
            vs = f"  {row['vs_fp32']:.2f}x fp32" if "vs_fp32" in row else ""
            print(f"{row['precision']:>12} beam {beam} batch {bs:>4} workers {w}: "
                  f"{row['sentences_per_s']:>7.1f} sent/s {row['tokens_per_s']:>8.1f} tok/s"
                  f"  BLEU {row['bleu']:5.2f}  peak RSS {row['peak_rss_mb']:.0f} MB"
                  f"{vs}{_ratio(row)}", file=sys.stderr, flush=True)
    result = {"model": args.model, "device": args.device, "threads": args.threads,
              "sentences": len(src), "torch_threads": args.threads, "cpu": cpu_capability(),
              "runs": runs}
    print(cpu_line(result["cpu"]), file=sys.stderr)
    if not args.no_cli:
        cli = result["cli"] = cli_runs(args.model, src_path, args.threads, args.device,
                                       args.cli_runs)
        print(f"whole command (defaults, start-up included): median {cli['seconds']} s of "
              f"{cli['seconds_each']} for {cli['lines']} lines{_ratio(cli)}, peak RSS "
              f"{cli['peak_rss_mb']:.0f} MB", file=sys.stderr)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
