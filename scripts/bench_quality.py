"""Time-to-quality benchmark: train for a fixed wall-clock budget, then beam-5 test BLEU.

Trains ``configs/quality.yaml`` (the best-known recipe; the file says why each choice) on
Multi30k de→en with ``training.max_minutes`` = ``--minutes`` through the real trainer, then
the trainer scores its best checkpoint on test_2016_flickr with beam 5 (sacrebleu BLEU/chrF,
signatures included). The budget covers training and periodic validation; the final test
decoding is timed separately. The load average is recorded because on a shared machine it
explains most of the run-to-run variation.

    python scripts/bench_quality.py [--minutes 20] [--threads 2] [--device cpu]
                                    [--config configs/quality.yaml] [--data DIR]
                                    [--precision auto [fp32 bf16 ...]]

Several ``--precision`` values train one after the other in the same run of the benchmark
(each with the full budget and its own run directory), so their BLEU and step counts compare
under the same conditions. The CPU's capability is printed with the results.

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import (  # noqa: E402
    DEFAULT_DATA,
    PEERS_BLEU_20MIN,
    cpu_capability,
    cpu_line,
    load_average,
    load_config,
    peak_rss_mb,
    pin_threads,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget")
    ap.add_argument("--config", default=str(ROOT / "configs" / "quality.yaml"))
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="Multi30k directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", nargs="+", default=["auto"],
                    choices=["auto", "fp32", "bf16", "fp16"],
                    help="one or more; several train one after the other, same budget each")
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "bench_quality"))
    args = ap.parse_args()

    logging.basicConfig(level=logging.WARNING)
    pin_threads(args.threads)
    several = len(args.precision) > 1
    runs = [train_once(args, precision, Path(args.run_dir) / precision if several
                       else Path(args.run_dir)) for precision in args.precision]
    cpu = cpu_capability()
    if several:
        print(json.dumps({"benchmark": "quality", "cpu": cpu, "runs": runs}, indent=2))
    else:
        print(json.dumps({**runs[0], "cpu": cpu}, indent=2))
    print(cpu_line(cpu), file=sys.stderr)


def train_once(args: argparse.Namespace, precision: str, run_dir: Path) -> dict:
    """One fresh run of the budget in ``precision``; its summary (also printed on stderr)."""
    from translate.trainer import Trainer

    if run_dir.exists():  # a fresh run every time (the tokenizer is retrained: ~seconds)
        shutil.rmtree(run_dir)
    cfg = load_config(Path(args.config), Path(args.data), run_dir, {
        "training": {"max_minutes": args.minutes, "max_epochs": 0, "max_steps": 0,
                     "device": args.device, "precision": precision,
                     "num_threads": args.threads},
    })
    load_start = load_average()
    t0 = time.perf_counter()
    # The trainer reports validation on stdout; here stdout carries only the JSON object.
    with contextlib.redirect_stdout(sys.stderr):
        trainer = Trainer(cfg)
        setup_s = time.perf_counter() - t0
        summary = trainer.fit()
    total_s = time.perf_counter() - t0
    out = {
        "benchmark": "quality", "config": args.config, "budget_minutes": args.minutes,
        "precision": str(trainer.dtype).removeprefix("torch."), "precision_asked": precision,
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
        "peers_bleu_20min": PEERS_BLEU_20MIN, "run_dir": str(run_dir),
    }
    print(f"quality ({out['precision']}): {args.minutes:g} min budget → test2016 BLEU "
          f"{out['test_bleu']} chrF {out['test_chrf']} (beam {out['beam_size']}), "
          f"{out['steps']} steps, {out['epochs']} epochs, {out['tokens_per_s']:,.0f} tok/s, "
          f"peak RSS {out['peak_rss_mb']:,.0f} MB, load {load_start} → "
          f"{out['load_average_end']}; peers at 20 min: {PEERS_BLEU_20MIN}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
