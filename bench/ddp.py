"""DDP on the CPU: 2 ranks x 1 thread (torchrun, gloo) against 1 rank x 2 threads; ~5 minutes.

Both runs train ``configs/multi30k.yaml`` on the same micro-batches per optimizer step
(the single process accumulates ``2 * accum`` micro-batches, each rank ``accum``), through
the real CLIs (``python -m translate.train`` and ``torchrun -m translate.train``), and
report the training rate that the run itself logs (``train/tokens_per_s`` in
``metrics.jsonl``, real target tokens over the wall time between log lines), leaving out
the first window (warm-up). ``scaling`` is the 2-rank rate over the 1-rank rate: 1.0 means
two single-threaded processes do as much as one process with two threads.

    python -m bench ddp [--steps 40] [--log-every 10] [--max-pairs 10000] [--max-tokens N]

Prints one JSON object on stdout. With the defaults it takes about 5 minutes on 2 CPU cores
(the data preparation, then 40 steps in each run).
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
DATA = ROOT.parent / "shared" / "data" / "multi30k"


def _sets(args: argparse.Namespace, run: Path, cache: Path, threads: int, accum: int) -> list:
    data = Path(args.data)
    values = {
        "data.train[0].prefix": data / "train", "data.valid[0].prefix": data / "val",
        "data.test[0].prefix": data / "test_2016_flickr",
        "data.train[0].max_pairs": args.max_pairs, "data.valid[0].max_pairs": 20,
        "data.test[0].max_pairs": 20, "data.cache_dir": cache,
        "training.run_dir": run, "training.device": "cpu", "training.precision": "fp32",
        "training.num_threads": threads, "training.accum_steps": accum,
        "training.max_steps": args.steps, "training.max_epochs": 0,
        "training.valid_every": 100000, "training.save_every_minutes": 0,
        "logging.log_every": args.log_every, "logging.wandb": "disabled",
    }
    if args.max_tokens:
        values["training.max_tokens"] = args.max_tokens
    out = []
    for key, value in values.items():
        out += ["--set", f"{key}={value}"]
    return out


def _run(cmd: list[str], run: Path, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled",
               OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"bench ddp: {' '.join(cmd[:6])} failed:\n{proc.stderr[-3000:]}")
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["train/tokens_per_s"] for r in records if "train/tokens_per_s" in r][1:]
    return {"tokens_per_s": statistics.median(rates), "windows": len(rates),
            "wall_s": round(wall, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--accum", type=int, default=1, help="micro-batches per rank per step")
    p.add_argument("--max-pairs", type=int, default=10000)
    p.add_argument("--max-tokens", type=int, default=0,
                   help="tokens per micro-batch (default: the config's)")
    p.add_argument("--data", default=str(DATA))
    args = p.parse_args()
    config = ["--config", "configs/multi30k.yaml"]
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
        root = Path(tmp)
        cache = root / "cache"
        one = _run([sys.executable, "-m", "translate.train", *config,
                    *_sets(args, root / "one", cache, 2, 2 * args.accum)], root / "one", 2)
        two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node=2", "-m", "translate.train", *config,
                    *_sets(args, root / "two", cache, 1, args.accum)], root / "two", 1)
    result = {
        "what": "configs/multi30k.yaml on CPU, fp32, the same micro-batches per step",
        "steps": args.steps, "max_pairs": args.max_pairs, "max_tokens": args.max_tokens,
        "one_rank_2_threads": one, "two_ranks_1_thread_gloo": two,
        "scaling": round(two["tokens_per_s"] / one["tokens_per_s"], 3),
        "cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
