"""Inference benchmark: beam/greedy, batch sizes, fp32/bf16/int8, shortlist, the CLI; ~10 min.

Greedy vs beam, batch sizes, fp32/bf16 vs dynamic int8, vocabulary shortlist off vs on, plus
a full CLI run; about 10 minutes on 2 CPU cores with the defaults.

Translates Multi30k test_2016_flickr.de with a run directory and prints one JSON object
(stdout) and a human summary (stderr). Throughput counts decoding only (each precision's
model is loaded once, outside the clock); the CLI number is the wall clock of a whole
``python -m translate.infer`` command, start-up included, as a user sees it.

Interleaving: at every (beam, batch, workers) point the ``--precisions`` and shortlist
variants run back to back, their order reversed every other repeat (ABBA), so a shared
host's drift hits them alike; each row reports the median of its repeats and, for every
precision but fp32, its ratio to the fp32 row of the same point (``vs_fp32``: per repeat and
median). Dynamic int8 runs after them (it changes the process's malloc settings, as
``infer --quantize`` does), so its ``vs_fp32`` compares runs apart in time. The CPU's
capability (model, bf16/AMX flags, torch's dispatch level, the bf16 unit) comes with the
results.

Ratios to the peers (``../shared/peers/*.json``) are printed only when this host matches the
one they were measured on (``bench/_peers.py``); otherwise the absolute figures and why not.

    python -m bench infer --model runs/multi30k [--threads 2] [--limit 0]
                          [--precisions fp32,bf16] [--shortlists off,on]
                          [--repeats 1] [--no-quantize]
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

from bench._common import (
    abba,
    base_precision,
    cpu_capability,
    cpu_line,
    parse_precisions,
    peak_rss_mb,
    round_ratios,
)
from bench._peers import (
    BEAM5_KEY,
    GREEDY_KEY,
    WHOLE_KEY,
    PeerView,
    add_peers_argument,
    peer_view,
)
from translate import tuning
from translate.inference.translator import Translator
from translate.runtime import set_threads
from translate.tracking.metrics import bleu_chrf

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BENCH_DATA", ROOT.parent / "shared" / "data" / "multi30k"))

# Targets as multiples of the best same-host peer's decoding-only rate:
# (precision, beam) -> ratio ...
TARGET_VS_PEER = {("fp32", 1): 2.0, ("fp32", 5): 2.0, ("int8-dynamic", 5): 3.0}
# ... and of its whole default command (beam 5), start-up included.
TARGET_WHOLE_VS_PEER = 2.5
# The peers' figures in ../shared/peers/*.json: decoding only at batch 64, per beam size.
PEER_KEYS = {1: GREEDY_KEY, 5: BEAM5_KEY}


def bench(translator: Translator, src: list[str], ref: list[str], beam: int,
          batch_size: int, workers: int, shortlist: bool) -> dict:
    kwargs = dict(beam=beam, batch_size=batch_size, workers=workers, shortlist=shortlist)
    translator.translate(src[:batch_size * workers], **kwargs)  # warm-up
    start = time.perf_counter()
    out = translator.translate(src, **kwargs)
    seconds = time.perf_counter() - start
    hyps = [r.text for r in out]
    tokens = sum(len(ids) for ids in translator.tokenizer.encode_tgt(hyps))
    scores = bleu_chrf(hyps, ref)
    return {"beam": beam, "batch_size": batch_size, "workers": workers,
            "shortlist": out[0].scores_over == "shortlist", "seconds": round(seconds, 3),
            "sentences_per_s": round(len(src) / seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1), "bleu": scores["bleu"],
            "chrf": scores["chrf"], "peak_rss_mb": round(peak_rss_mb(), 1)}


def shortlist_sizes(translator: Translator, src: list[str], batch_size: int) -> dict | None:
    """Mean and largest shortlist over the batches ``translate`` forms from ``src``."""
    sizes = translator.shortlist_sizes(src, batch_size=batch_size, shortlist=True)
    if not sizes:
        return None
    return {"mean": round(statistics.mean(sizes), 1), "max": max(sizes),
            "vocab": translator.tokenizer.tgt_vocab_size}


def vs_peer(row: dict, peers: PeerView) -> dict:
    """The row's ratio to the best same-host peer's decoding-only rate (None on another
    host) and the target ratio."""
    key = PEER_KEYS.get(row["beam"])
    return {"vs_best_peer": key and peers.ratio(row["sentences_per_s"], key),
            "target_vs_peer": TARGET_VS_PEER.get((row["precision"], row["beam"]))}


def median_row(rows: list[dict]) -> dict:
    """One row for repeated runs of a setting: the median speed, every run's figure."""
    row = dict(rows[0])
    row["sentences_per_s"] = statistics.median(r["sentences_per_s"] for r in rows)
    row["tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in rows)
    row["seconds"] = statistics.median(r["seconds"] for r in rows)
    row["sentences_per_s_each"] = [r["sentences_per_s"] for r in rows]
    row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rows)
    return row


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
            raise SystemExit(f"bench infer: the CLI failed:\n{proc.stderr}")
        lines = out.read_text(encoding="utf-8").count("\n")
        rss_mb = int(hwm.read_text()) / 1024 if hwm.is_file() else float("nan")
    return {"command": "-m translate.infer " + " ".join(args), "seconds": round(seconds, 2),
            "lines": lines, "peak_rss_mb": round(rss_mb, 1)}


def cli_runs(model: str, src_path: Path, threads: int, device: str, runs: int,
             peers: PeerView) -> dict:
    """The whole command ``runs`` times: the median wall clock against the peer's (beam 5, the
    default), and the largest peak RSS. One run on a shared host can be far off."""
    each = [cli_wall_clock(model, src_path, threads, device) for _ in range(max(1, runs))]
    seconds = round(statistics.median(r["seconds"] for r in each), 2)
    lines = each[0]["lines"]
    return {"command": each[0]["command"], "lines": lines, "seconds": seconds,
            "seconds_each": [r["seconds"] for r in each],
            "lines_per_s": round(lines / seconds, 1),
            "vs_best_peer": peers.ratio(seconds, WHOLE_KEY, higher_is_better=False),
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


def _precision_name(tr: Translator) -> str:
    if tr.quantized:
        return "int8-dynamic"
    name = str(tr.dtype).removeprefix("torch.")
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(name, name)


def run_point(translators: dict[str, Translator], src: list[str], ref: list[str],
              point: tuple[int, int, int], shortlists: list[bool], repeats: int,
              base: dict | None = None) -> list[dict]:
    """Every (precision, shortlist) variant at one (beam, batch, workers) point, interleaved
    over ``repeats`` (ABBA); one median row per variant with its ratio to fp32 (the fp32 runs
    of this point, repeat by repeat, or ``base``: fp32 rows measured earlier, by shortlist).
    Without fp32 among them, the ratios are to the first precision (``vs_<name>``)."""
    beam, bs, w = point
    variants = [(name, sl) for name in translators for sl in shortlists]
    timed: dict[tuple[str, bool], list[dict]] = {v: [] for v in variants}
    for repeat in range(max(1, repeats)):
        for name, sl in abba(variants, repeat):
            timed[name, sl].append(bench(translators[name], src, ref, beam, bs, w, sl))
    ref_name = base_precision(list(translators))
    rows = []
    for name, sl in variants:
        tr = translators[name]
        row = {"precision": _precision_name(tr), "precision_asked": name,
               **median_row(timed[name, sl]), "shortlist_asked": sl}
        if row["shortlist"]:
            row["shortlist_size"] = shortlist_sizes(tr, src, bs)
        if base is not None and sl in base:  # int8: the fp32 runs came earlier
            row["vs_fp32"] = {"per_round": [], "median": round(
                row["sentences_per_s"] / base[sl]["sentences_per_s"], 3)}
        elif base is None and name != ref_name:
            rates = {(i, n): r["sentences_per_s"] for n in (ref_name, name)
                     for i, r in enumerate(timed[n, sl])}
            row[f"vs_{ref_name}"] = round_ratios(rates, [ref_name, name])[f"{name}/{ref_name}"]
        rows.append(row)
    return rows


def _print_row(row: dict, point: tuple[int, int, int]) -> None:
    beam, bs, w = point
    vs = "".join(f"  {v['median']:.2f}x {k[3:]}" for k, v in row.items()
                 if k.startswith("vs_") and isinstance(v, dict) and v.get("median"))
    print(f"{row['precision']:>12} beam {beam} batch {bs:>4} workers {w} "
          f"shortlist {'on ' if row['shortlist'] else 'off'}: "
          f"{row['sentences_per_s']:>7.1f} sent/s {row['tokens_per_s']:>8.1f} "
          f"tok/s  BLEU {row['bleu']:5.2f}  peak RSS {row['peak_rss_mb']:.0f} MB{vs}"
          f"{_ratio(row)}", file=sys.stderr, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="run directory")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--device", default="cpu")
    add_peers_argument(p)
    p.add_argument("--batch-sizes", default="64,128,256")
    p.add_argument("--workers", default="1,2", help="concurrent CPU batches to try")
    p.add_argument("--beams", default="1,5")
    p.add_argument("--limit", type=int, default=0, help="first N test sentences (0 = all)")
    p.add_argument("--precisions", "--precision", dest="precisions", type=parse_precisions,
                   default=["fp32"], metavar="P[,P...]",
                   help="autocast precisions (fp32, bf16, fp16, auto), interleaved per point")
    p.add_argument("--no-quantize", action="store_true", help="skip the int8 runs")
    p.add_argument("--no-cli", action="store_true", help="skip the whole-command timing")
    p.add_argument("--cli-runs", type=int, default=3,
                   help="times to run the whole command (the median is reported)")
    p.add_argument("--shortlists", default="off,on",
                   help="vocabulary shortlist off and/or on, run back to back per setting")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs of each setting, variant order alternating (median reported)")
    args = p.parse_args()
    tuning.apply_process_tuning()  # the CLI's oneDNN bound; its MKL choice is timed below
    # Before loading anything: the probe's GEMM rate is the host's, not ours.
    peers = peer_view(args.peers, device=args.device)
    print(peers.line(), file=sys.stderr, flush=True)
    cpu = cpu_capability()
    print(cpu_line(cpu), file=sys.stderr, flush=True)
    set_threads(args.threads)

    src_path = DATA / "test_2016_flickr.de"
    src = src_path.read_text(encoding="utf-8").splitlines()
    ref = (DATA / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    if args.limit:
        src, ref = src[:args.limit], ref[:args.limit]
    shortlists = [m == "on" for m in args.shortlists.split(",")]
    grid = [(beam, bs, w) for beam in _ints(args.beams) for w in _ints(args.workers)
            for bs in _ints(args.batch_sizes) if w == 1 or args.device == "cpu"]
    passes = [{name: False for name in args.precisions}]
    if not args.no_quantize and args.device == "cpu":
        passes.append({"int8": True})
    runs, fp32_rows = [], {}
    for variants in passes:
        translators, load_s = {}, {}
        for name, quantize in variants.items():
            start = time.perf_counter()
            translators[name] = Translator.load(args.model, device=args.device,
                                                quantize=quantize,
                                                precision="fp32" if quantize else name)
            load_s[name] = round(time.perf_counter() - start, 2)
        if any(variants.values()):  # as `infer --quantize` does, after loading
            tuning.retain_freed_memory()
        for point in grid:
            rows = run_point(translators, src, ref, point, shortlists, args.repeats,
                             base=fp32_rows.get(point) if any(variants.values()) else None)
            for row in rows:
                row["load_s"] = load_s[row["precision_asked"]]
                row.update(vs_peer(row, peers))
                if row["precision"] == "fp32" and not any(variants.values()):
                    fp32_rows.setdefault(point, {})[row["shortlist_asked"]] = row
                runs.append(row)
                _print_row(row, point)
    result = {"model": args.model, "device": args.device, "threads": args.threads,
              "sentences": len(src), "torch_threads": args.threads, "cpu": cpu, "runs": runs,
              "peers": peers.summary(),
              "peer_figures": {beam: peers.figure(key) for beam, key in PEER_KEYS.items()}}
    if not args.no_cli:
        cli = result["cli"] = cli_runs(args.model, src_path, args.threads, args.device,
                                       args.cli_runs, peers)
        print(f"whole command (defaults, start-up included): median {cli['seconds']} s of "
              f"{cli['seconds_each']} for {cli['lines']} lines{_ratio(cli)}, peak RSS "
              f"{cli['peak_rss_mb']:.0f} MB", file=sys.stderr)
    print(f"{peers.line()}; peers' decoding-only sent/s by beam: {result['peer_figures']}, "
          f"whole command s: {peers.figure(WHOLE_KEY, higher_is_better=False)}",
          file=sys.stderr)
    print(cpu_line(cpu), file=sys.stderr)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
