"""Time-to-quality: train for a fixed wall-clock budget, then beam-5 test BLEU; ~22 min a run.

Trains ``configs/quality.yaml`` (the best-known recipe; the file says why each choice) on
Multi30k de→en with ``training.max_minutes`` = ``--minutes`` through the real trainer, then
the trainer scores its best checkpoint on test_2016_flickr with beam 5 (sacrebleu BLEU/chrF,
signatures included). The budget covers training and periodic validation; the final test
decoding is timed separately (a minute or two: a run takes about ``--minutes`` + 2, per
precision and round). The load average is recorded because on a shared machine it
explains most of the run-to-run variation.

    python -m bench quality [--minutes 20] [--threads 2] [--device cpu]
                            [--config configs/quality.yaml] [--data DIR]
                            [--precisions auto[,fp32,bf16...]] [--rounds 1]

Several ``--precisions`` train one after the other in the same run of the benchmark, each
with the full budget and its own run directory, their order reversed every other round
(ABBA over ``--rounds``), so their BLEU and step counts compare under the same conditions;
the output gives each round's BLEU difference and tokens/s ratio to fp32. The CPU's
capability (model, bf16/AMX flags, torch's dispatch level, the bf16 unit) comes with the
results.

Prints one JSON object (stdout) and a human summary (stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from bench._common import (
    DEFAULT_DATA,
    abba,
    add_training_run_arguments,
    base_precision,
    cpu_capability,
    cpu_line,
    load_average,
    load_config,
    peak_rss_mb,
    pin_threads,
    round_ratios,
)
from bench._peers import BLEU_CHRF_BEAM5_KEY, add_peers_argument, peer_view
from translate import tuning

ROOT = Path(__file__).resolve().parents[1]
# The peers' BLEU_CHRF_BEAM5_KEY figure is [BLEU, chrF] on test2016: BLEU is its first item.
BLEU = 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget")
    ap.add_argument("--config", default=str(ROOT / "configs" / "quality.yaml"))
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="Multi30k directory")
    add_training_run_arguments(ap, precisions=["auto"], several="train one after the other",
                               rounds_help="train every precision this many times, ABBA order")
    add_peers_argument(ap)
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "bench_quality"))
    args = ap.parse_args()
    tuning.apply_process_tuning()  # what `python -m translate.train` runs with

    logging.basicConfig(level=logging.WARNING)
    pin_threads(args.threads)
    # before training: its load would skew the probe
    peers = peer_view(args.peers, device=args.device)
    cpu = cpu_capability()
    print(cpu_line(cpu), file=sys.stderr, flush=True)
    rounds = max(1, args.rounds)
    single = rounds == 1 and len(args.precisions) == 1
    runs = []
    for rnd in range(rounds):
        for precision in abba(args.precisions, rnd):
            run_dir = Path(args.run_dir)
            if not single:
                run_dir = run_dir / (precision if rounds == 1 else f"{precision}-r{rnd}")
            out = train_once(args, precision, run_dir, peers)
            out.update(round=rnd, cpu=cpu)
            runs.append(out)
    if single:
        print(json.dumps(runs[0], indent=2))
    else:
        print(json.dumps({"benchmark": "quality", "cpu": cpu, "runs": runs,
                          "precision_comparison": compare(runs, args.precisions)}, indent=2))
    print(cpu_line(cpu), file=sys.stderr)


def compare(runs: list[dict], precisions: list[str]) -> dict:
    """Per precision against the base one (fp32 when trained): tokens/s ratios and test BLEU
    differences, round by round (runs of one round met the same conditions)."""
    base = base_precision(precisions)
    key = {(r["round"], r["precision_asked"]): r for r in runs}
    speed = round_ratios({k: r["tokens_per_s"] for k, r in key.items()}, precisions)
    out = {}
    for name in precisions:
        if name == base:
            continue
        diffs = [round(key[rnd, name]["test_bleu"] - key[rnd, base]["test_bleu"], 2)
                 for rnd, n in key if n == name and key[rnd, name].get("test_bleu") is not None
                 and key.get((rnd, base), {}).get("test_bleu") is not None]
        out[f"{name}/{base}"] = {"tokens_per_s": speed[f"{name}/{base}"],
                                 "test_bleu_difference_per_round": diffs}
    return out


def train_once(args: argparse.Namespace, precision: str, run_dir: Path, peers) -> dict:
    """One fresh run of the budget in ``precision``; its summary (also printed on stderr)."""
    from translate.training.trainer import Trainer

    if run_dir.exists():  # a fresh run every time (the tokenizer is retrained: ~seconds)
        shutil.rmtree(run_dir)
    cfg = load_config(Path(args.config), Path(args.data), run_dir, {
        "training": {"max_minutes": args.minutes, "max_epochs": 0, "max_steps": 0,
                     "device": args.device, "precision": precision,
                     "num_threads": args.threads},
    })
    peers_bleu = peers.figure(BLEU_CHRF_BEAM5_KEY, pick=BLEU)
    load_start = load_average()
    t0 = time.perf_counter()
    # The trainer reports validation on stdout; here stdout carries only the JSON object.
    with contextlib.redirect_stdout(sys.stderr):
        trainer = Trainer(cfg)
        setup_s = time.perf_counter() - t0
        summary = trainer.fit()
    total_s = time.perf_counter() - t0
    name = str(trainer.dtype).removeprefix("torch.")
    out = {
        "benchmark": "quality", "config": args.config, "budget_minutes": args.minutes,
        "precision": {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(name, name),
        "precision_asked": precision,
        "train_minutes": round(summary.get("train_minutes", 0.0), 2),
        "setup_s": round(setup_s, 1),
        "test_decode_and_total_s": round(total_s, 1),
        "steps": summary.get("step"), "epochs": summary.get("epochs"),
        "tokens_per_s": round(summary.get("tokens_per_s", 0.0), 1),
        "best_valid_bleu_greedy": summary.get("best_valid"),
        "test_bleu": summary.get("test_bleu"), "test_chrf": summary.get("test_chrf"),
        "beam_size": cfg.inference.beam_size, "signatures": summary.get("signatures"),
        "peak_rss_mb": round(peak_rss_mb(), 1), "threads": args.threads,
        "device": str(trainer.device), "load_average_start": load_start,
        "load_average_end": load_average(), "target_bleu": 33.0,
        "peers": peers.summary(), "peers_bleu": peers_bleu,
        "bleu_vs_best_peer": peers.difference(summary.get("test_bleu"),
                                              BLEU_CHRF_BEAM5_KEY, pick=BLEU),
        "run_dir": str(run_dir),
    }
    print(f"quality ({out['precision']}): {args.minutes:g} min budget → test2016 BLEU "
          f"{out['test_bleu']} chrF {out['test_chrf']} (beam {out['beam_size']}), "
          f"{out['steps']} steps, {out['epochs']} epochs, {out['tokens_per_s']:,.0f} tok/s, "
          f"peak RSS {out['peak_rss_mb']:,.0f} MB (of the benchmark's process so far), "
          f"load {load_start} → {out['load_average_end']}; peers' BLEU: {peers_bleu}"
          f"{_difference(out['bleu_vs_best_peer'])}; {peers.line()}", file=sys.stderr)
    return out


def _difference(delta: float | None) -> str:
    return "" if delta is None else f" ({delta:+.2f} vs the best peer)"


if __name__ == "__main__":
    main()
