"""Ensembles: test2016 BLEU and decoding sentences/s of each member vs their ensemble; minutes.

Each ``--model`` alone, then all of them as one ensemble with each way of combining the
members' step distributions (``prob``: the log of the mean probability; ``logprob``: the
renormalised mean log-probability), and, with ``--snapshot RUN``, one run's checkpoints
(``--snapshot-checkpoints``, default last,best) as an ensemble. Multi30k test_2016_flickr
(1,000 sentences), beam 5 and greedy, in fp32 and in bf16 where the CPU has it natively.

Decoding only is timed (each model loaded outside the clock, one untimed batch first);
members and ensembles alternate in order (ABBA) over ``--repeats``, each row the median.
Prints one JSON object (stdout, and ``--out``) and a table on stderr, with the ensemble's
BLEU gain over its best member and its speed relative to one member.

    python -m bench ensemble --model runs/a --model runs/b [--snapshot runs/a]
                             [--threads 1] [--precisions fp32,bf16] [--beams 5,1]
                             [--repeats 1] [--limit 0] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from translate import tuning

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BENCH_DATA", ROOT.parent / "shared" / "data" / "multi30k"))
TEST = "test_2016_flickr"
COMBINES = ("prob", "logprob")


def _log(msg: str) -> None:
    print(f"[bench ensemble {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def variants(models: list[str], snapshot: str | None,
             checkpoints: str) -> dict[str, dict]:
    """What is decoded: every member alone, the ensemble with each combination, and the
    snapshot ensemble; name -> ``Translator.load`` arguments."""
    out: dict[str, dict] = {f"member{i + 1}": {"run_dir": m} for i, m in enumerate(models)}
    if len(models) > 1:
        for combine in COMBINES:
            out[f"ensemble-{combine}"] = {"run_dir": models, "combine": combine}
    if snapshot:
        for i, ckpt in enumerate(checkpoints.split(",")):
            out[f"snapshot{i + 1}"] = {"run_dir": snapshot, "checkpoint": ckpt}
        out["snapshot-ensemble"] = {"run_dir": snapshot, "checkpoint": checkpoints}
    return out


def decode(tr, src: list[str], ref: list[str], beam: int) -> dict:
    from translate.tracking.metrics import bleu_chrf

    tr.translate(src[:64], beam=beam)  # warm-up: oneDNN primitives, allocator
    start = time.perf_counter()
    out = tr.translate(src, beam=beam)
    seconds = time.perf_counter() - start
    scores = bleu_chrf([r.text for r in out], ref)
    return {"seconds": seconds, "bleu": scores["bleu"], "chrf": scores["chrf"]}


def summarise(rows: list[dict]) -> list[dict]:
    """Per (precision, beam): each ensemble's BLEU gain over its best member and its speed
    as a share of the members' mean speed."""
    out = []
    for precision, beam in sorted({(r["precision"], r["beam"]) for r in rows}):
        here = {r["name"]: r for r in rows if (r["precision"], r["beam"]) == (precision, beam)}
        groups = {"ensemble": [n for n in here if n.startswith("member")],
                  "snapshot-ensemble": [n for n in here if n.startswith("snapshot")
                                        and n != "snapshot-ensemble"]}
        for name, row in here.items():
            kind = "snapshot-ensemble" if name == "snapshot-ensemble" else (
                "ensemble" if name.startswith("ensemble-") else None)
            members = groups.get(kind or "", [])
            if not members:
                continue
            best = max(here[m]["bleu"] for m in members)
            speed = statistics.mean(here[m]["sentences_per_s"] for m in members)
            out.append({"name": name, "precision": precision, "beam": beam,
                        "bleu": row["bleu"], "best_member_bleu": best,
                        "bleu_gain": round(row["bleu"] - best, 2),
                        "speed_vs_member": round(row["sentences_per_s"] / speed, 2)})
    return out


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench ensemble",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True,
                   help="a member's run directory (repeat it: two or more)")
    p.add_argument("--snapshot", help="a run whose checkpoints also decode as an ensemble")
    p.add_argument("--snapshot-checkpoints", default="last,best",
                   help="the snapshot ensemble's checkpoints: names or .pt paths, "
                        "comma-separated (default: last,best)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--precisions", default="fp32,bf16",
                   help="fp32 and/or bf16 (bf16 only where the CPU runs it natively)")
    p.add_argument("--beams", default="5,1", help="beam sizes (default 5,1)")
    p.add_argument("--repeats", type=int, default=1, help="timed decodes per row")
    p.add_argument("--limit", type=int, default=0, help="first N sentences (0: all)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tuning.apply_process_tuning(inference=True)  # as infer does, before torch loads
    import torch

    from bench._common import abba, cpu_capability, cpu_line, load_average, parse_precisions
    from translate.inference.translator import Translator
    from translate.runtime import cpu_bf16_lstm_supported, set_threads

    set_threads(args.threads)
    precisions = parse_precisions(args.precisions, ("fp32", "bf16"))
    if not cpu_bf16_lstm_supported(torch.cpu.get_capabilities()):
        precisions = [p for p in precisions if p != "bf16"]
    beams = [int(b) for b in args.beams.split(",")]
    src = (DATA / f"{TEST}.de").read_text(encoding="utf-8").split("\n")[:-1]
    ref = (DATA / f"{TEST}.en").read_text(encoding="utf-8").split("\n")[:-1]
    if args.limit:
        src, ref = src[:args.limit], ref[:args.limit]
    cpu = cpu_capability()
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "cpu": cpu, "commit": _commit(), "threads": args.threads,
                    "argv": sys.argv[1:] if argv is None else argv,
                    "load_before": load_average(), "sentences": len(src)}
    todo = variants(args.model, args.snapshot, args.snapshot_checkpoints)
    timed: dict[tuple, list[dict]] = {}
    for precision in precisions:
        loaded = {name: Translator.load(device="cpu", precision=precision, shortlist=None,
                                        **kw) for name, kw in todo.items()}
        for beam in beams:
            for repeat in range(max(1, args.repeats)):
                for name in abba(list(loaded), repeat):
                    row = decode(loaded[name], src, ref, beam)
                    timed.setdefault((name, precision, beam), []).append(row)
                    _log(f"{name} {precision} beam {beam}: BLEU {row['bleu']:.2f}, "
                         f"{len(src) / row['seconds']:.1f} sentences/s")
    rows = []
    for (name, precision, beam), runs in timed.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        rows.append({"name": name, "precision": precision, "beam": beam,
                     "bleu": runs[0]["bleu"], "chrf": runs[0]["chrf"],
                     "sentences_per_s": round(len(src) / seconds, 1),
                     "seconds_each": [round(r["seconds"], 2) for r in runs]})
    result.update(models={n: {k: str(v) for k, v in kw.items()} for n, kw in todo.items()},
                  rows=rows, summary=summarise(rows), load_after=load_average())
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    print(cpu_line(cpu), file=sys.stderr)
    for r in rows:
        print(f"{r['name']:20s} {r['precision']:5s} beam {r['beam']}  BLEU {r['bleu']:6.2f}  "
              f"{r['sentences_per_s']:7.1f} sentences/s", file=sys.stderr)
    for s in result["summary"]:
        print(f"{s['name']:20s} {s['precision']:5s} beam {s['beam']}  {s['bleu_gain']:+.2f} "
              f"BLEU over the best member, {s['speed_vs_member']:.2f}x a member's speed",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
