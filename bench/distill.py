"""Distillation: a distilled student vs its teacher and a same-size baseline; about an hour.

Does a distilled student decode greedily at least 4x faster than its teacher's beam 5,
within 0.5 BLEU of it, and beat the same small model trained without distillation by 2 BLEU
or more?

On one host, in one run (each step can also take an earlier step's result instead):

1. the teacher: trained on Multi30k (configs/multi30k.yaml, ``--minutes`` of training), or
   taken with ``--teacher RUN_DIR``;
2. ``python -m translate.distill --stage translate``: the teacher's beam search over the 29k
   training sources (timed: lines/s);
3. ``--minutes`` of training each, ``--threads`` each, as many side by side as the cores
   allow (so every model gets its minutes of CPU): the student on the distilled corpus
   (configs/student.yaml) and the baseline, the same configs/student.yaml trained on the
   original data (or taken with ``--baseline RUN_DIR``); then, with ``--keep-references``
   on a 2-core host, a second student on the distilled corpus plus the original references;
4. every model on test2016 (1000 sentences): BLEU, chrF and decoding sentences/s for beam 5
   and greedy in fp32, bf16 (where the CPU has it natively) and dynamic int8. Decoding only
   is timed (each model is loaded outside the clock); fp32 and bf16 alternate (ABBA) over
   ``--repeats``, int8 runs last (it changes the process's malloc settings, as
   ``infer --quantize`` does).

Takes about an hour with a teacher to train (20 + translation ~3-20 + 20 + ~10 minutes on
2 CPU cores), ~35 minutes with ``--teacher`` (20 more with ``--keep-references``). Prints
one JSON object (stdout, and ``--out``) and a summary with the three targets on stderr.

    python -m bench distill [--teacher RUN_DIR] [--baseline RUN_DIR] [--work runs/bench-distill]
                            [--minutes 20] [--threads 1] [--keep-references] [--repeats 1]
                            [--select best|closest] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "multi30k"
TEST = "test_2016_flickr"


def _log(msg: str) -> None:
    print(f"[bench distill {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _command(args: list[str], log_path: Path) -> float:
    """Run ``python -m ...args`` to the end (its output in ``log_path``); its wall seconds."""
    start = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"bench distill: {' '.join(args[:2])} failed; see {log_path}")
    return time.perf_counter() - start


SEED = 1234  # every model's training.seed unless --seed says otherwise


def _common(run_dir: Path, minutes: float, threads: int, seed: int) -> list[str]:
    return ["--set", f"training.run_dir={run_dir}", "--set", f"training.max_minutes={minutes}",
            "--set", f"training.num_threads={threads}", "--set", "logging.wandb=disabled",
            "--set", f"training.seed={seed}"]


def train_teacher(work: Path, minutes: float, threads: int, seed: int) -> Path:
    run = work / "teacher"
    _log(f"training the teacher for {minutes} minutes -> {run}")
    _command(["translate.train", "--config", "configs/multi30k.yaml", "--overwrite",
              *_common(run, minutes, threads, seed)], work / "teacher.log")
    return run


def distill_corpus(teacher: Path, work: Path, threads: int, select: str | None) -> dict:
    """The translate stage, timed; the corpus lands in work/distilled (shared by the
    students)."""
    _log(f"translating the training sources with {teacher}")
    seconds = _command(["translate.distill", "--teacher", str(teacher), "--config",
                        "configs/student.yaml", "--stage", "translate",
                        *_common(work / "student", 1, threads, SEED),
                        "--set", f"distill.output={work / 'distilled'}",
                       *(["--set", f"distill.select={select}"] if select else [])],
                       work / "translate.log")
    manifest = json.loads((work / "distilled" / "manifest.json").read_text())
    return {"seconds": round(seconds, 1), "lines": manifest["rows"],
            "lines_per_s": round(manifest["rows"] / seconds, 1),
            "search": manifest["settings"]["search"]}


def waves(names: list[str], cores: int, threads: int) -> list[list[str]]:
    """The training jobs in groups that run side by side: at most one per ``threads`` cores,
    so each gets its minutes of CPU as well as of wall clock; the optional ``student_refs``
    last (on 2 cores with one thread each it waits for the other two)."""
    at_once = max(1, cores // max(1, threads))
    order = sorted(names, key=lambda name: name == "student_refs")
    return [order[i:i + at_once] for i in range(0, len(order), at_once)]


def train_side_by_side(teacher: Path, work: Path, minutes: float, threads: int,
                       keep_references: bool, baseline: Path | None,
                       seed: int) -> dict[str, Path]:
    """The students (and the baseline, unless given), ``threads`` each, as many at once as
    the cores allow."""
    jobs: dict[str, list[str]] = {}
    runs: dict[str, Path] = {}
    variants = [("student", False)] + ([("student_refs", True)] if keep_references else [])
    for name, keep in variants:
        runs[name] = work / name
        jobs[name] = ["translate.distill", "--teacher", str(teacher), "--config",
                      "configs/student.yaml", "--stage", "train", "--overwrite",
                      *_common(runs[name], minutes, threads, seed),
                      "--set", f"distill.output={work / 'distilled'}",
                      "--set", f"distill.keep_references={str(keep).lower()}"]
    if baseline is None:
        runs["baseline"] = work / "baseline"
        jobs["baseline"] = ["translate.train", "--config", "configs/student.yaml",
                            "--overwrite", *_common(runs["baseline"], minutes, threads, seed)]
    else:
        runs["baseline"] = baseline
    failed = []
    for wave in waves(list(jobs), os.cpu_count() or 1, threads):
        _log(f"training {', '.join(wave)} side by side for {minutes} minutes, {threads} "
             "thread(s) each")
        procs = {}
        for name in wave:
            log = (work / f"{name}.log").open("w")
            procs[name] = (subprocess.Popen([sys.executable, "-m", *jobs[name]], cwd=ROOT,
                                            stdout=log, stderr=subprocess.STDOUT), log)
        for name, (proc, log) in procs.items():
            if proc.wait():
                failed.append(name)
            log.close()
    if failed:
        raise SystemExit(f"bench distill: {', '.join(failed)} failed; see {work}/*.log")
    return runs


def _steps(run: Path) -> int | None:
    summary = run / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        return data.get("step") or data.get("steps")
    return None


def evaluate(runs: dict[str, Path], threads: int, repeats: int, limit: int = 0) -> list[dict]:
    """BLEU and decoding sentences/s of every run x search x precision on test2016."""
    from translate import tuning

    tuning.apply_process_tuning(inference=True)  # as infer does, before torch loads
    import torch

    from translate.inference.translator import Translator
    from translate.runtime import cpu_bf16_lstm_supported, set_threads
    from translate.tracking.metrics import bleu_chrf

    set_threads(threads)
    src = (DATA / f"{TEST}.de").read_text(encoding="utf-8").split("\n")[:-1]
    ref = (DATA / f"{TEST}.en").read_text(encoding="utf-8").split("\n")[:-1]
    if limit:
        src, ref = src[:limit], ref[:limit]
    precisions = ["fp32"] + (["bf16"] if cpu_bf16_lstm_supported(
        torch.cpu.get_capabilities()) else [])
    rows: dict[tuple, dict] = {}

    def one(name: str, tr, beam: int, precision: str) -> None:
        start = time.perf_counter()
        out = tr.translate(src, beam=beam)
        seconds = time.perf_counter() - start
        key = (name, beam, precision)
        row = rows.setdefault(key, {"model": name, "beam": beam, "precision": precision,
                                    "seconds": []})
        row["seconds"].append(seconds)
        scores = bleu_chrf([r.text for r in out], ref)
        row.update(bleu=scores["bleu"], chrf=scores["chrf"])

    for name, run in runs.items():
        models = {p: Translator.load(run, device="cpu", precision=p, quantize=False)
                  for p in precisions}
        for rep in range(repeats):
            for beam in (5, 1):
                order = precisions if rep % 2 == 0 else precisions[::-1]
                for p in order:
                    one(name, models[p], beam, p)
                    _log(f"{name} beam {beam} {p}: {rows[(name, beam, p)]['bleu']} BLEU")
    tuning.retain_freed_memory()  # as infer --quantize does, after the other precisions
    for name, run in runs.items():
        tr = Translator.load(run, device="cpu", precision="fp32", quantize=True)
        for _ in range(repeats):
            for beam in (5, 1):
                one(name, tr, beam, "int8")
                _log(f"{name} beam {beam} int8: {rows[(name, beam, 'int8')]['bleu']} BLEU")
    out = []
    for row in rows.values():
        median = statistics.median(row["seconds"])
        out.append({**row, "seconds": [round(s, 2) for s in row["seconds"]],
                    "sentences_per_s": round(len(src) / median, 1)})
    return out


def targets(rows: list[dict]) -> dict:
    """The three targets, each in fp32 and at each model's fastest precision."""
    def get(model: str, beam: int, precision: str | None = None) -> dict:
        cands = [r for r in rows if r["model"] == model and r["beam"] == beam
                 and (precision is None or r["precision"] == precision)]
        return max(cands, key=lambda r: r["sentences_per_s"])

    out = {}
    for label, precision in (("fp32", "fp32"), ("fastest", None)):
        t5, s1 = get("teacher", 5, precision), get("student", 1, precision)
        b1 = get("baseline", 1, precision)
        out[label] = {
            "teacher_beam5": {k: t5[k] for k in ("precision", "bleu", "sentences_per_s")},
            "student_greedy": {k: s1[k] for k in ("precision", "bleu", "sentences_per_s")},
            "baseline_greedy": {k: b1[k] for k in ("precision", "bleu", "sentences_per_s")},
            "speedup": round(s1["sentences_per_s"] / t5["sentences_per_s"], 2),
            "bleu_vs_teacher": round(s1["bleu"] - t5["bleu"], 2),
            "bleu_vs_baseline": round(s1["bleu"] - b1["bleu"], 2),
        }
        o = out[label]
        o["met"] = {"speedup>=4": o["speedup"] >= 4, "bleu_vs_teacher>=-0.5":
                    o["bleu_vs_teacher"] >= -0.5, "bleu_vs_baseline>=2":
                    o["bleu_vs_baseline"] >= 2}
    return out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench distill",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", type=Path, help="a trained teacher (default: train one)")
    p.add_argument("--baseline", type=Path,
                   help="a configs/student.yaml run without distillation (default: train one)")
    p.add_argument("--student", type=Path,
                   help="an already distilled student (skips translating and training it)")
    p.add_argument("--work", type=Path, default=Path("runs/bench-distill"))
    p.add_argument("--minutes", type=float, default=20.0,
                   help="training minutes of each model (default 20)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per training process and for decoding test2016")
    p.add_argument("--translate-threads", type=int, default=0,
                   help="torch threads of the translate stage (default: --threads)")
    p.add_argument("--keep-references", action="store_true",
                   help="also train a student on the distilled corpus plus the references")
    p.add_argument("--select", choices=("best", "closest"),
                   help="distill.select: the teacher's best hypothesis or, of its n-best, the "
                        "one closest to the reference (default: configs/student.yaml's)")
    p.add_argument("--seed", type=int, default=SEED,
                   help=f"training.seed of every model trained here (default {SEED}); run "
                        "again with another seed (and --teacher) for the seed spread")
    p.add_argument("--repeats", type=int, default=1, help="timed decodes per row")
    p.add_argument("--limit", type=int, default=0,
                   help="decode only the first N test sentences (0: all 1000)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result: dict = {"date": started, "cpu": _cpu(), "cores": os.cpu_count(),
                    "commit": _commit(), "argv": sys.argv[1:] if argv is None else argv,
                    "minutes": args.minutes, "threads": args.threads, "seed": args.seed,
                    "translate_threads": args.translate_threads or args.threads}
    teacher = args.teacher or train_teacher(args.work, args.minutes, args.threads, args.seed)
    runs: dict[str, Path] = {"teacher": teacher}
    if args.student:
        runs["student"] = args.student
        if args.baseline:
            runs["baseline"] = args.baseline
    else:
        result["translate"] = distill_corpus(teacher, args.work,
                                             args.translate_threads or args.threads,
                                             args.select)
        result["select"] = result["translate"]["search"]["select"]
        runs.update(train_side_by_side(teacher, args.work, args.minutes, args.threads,
                                       args.keep_references, args.baseline, args.seed))
    result["steps"] = {name: _steps(run) for name, run in runs.items()}
    result["runs"] = {name: str(run) for name, run in runs.items()}
    _log("decoding test2016 with every model")
    result["decoding"] = evaluate(runs, args.threads, args.repeats, args.limit)
    if "baseline" in runs:
        result["targets"] = targets(result["decoding"])
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    for row in result["decoding"]:
        print(f"{row['model']:13s} beam {row['beam']} {row['precision']:5s} BLEU "
              f"{row['bleu']:6.2f} chrF {row['chrf']:6.2f} {row['sentences_per_s']:8.1f} sent/s",
              file=sys.stderr)
    for label, t in result.get("targets", {}).items():
        print(f"{label}: student greedy {t['speedup']}x teacher beam 5, BLEU "
              f"{t['bleu_vs_teacher']:+.2f} vs teacher, {t['bleu_vs_baseline']:+.2f} vs "
              f"baseline; met: {t['met']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
