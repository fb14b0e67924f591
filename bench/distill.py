"""Distillation: a longer-trained teacher (or ensemble), a student, a baseline (~1.5 hours).

Does a distilled student, decoded greedily, beat the same small model trained without
distillation for the same time by at least 1 BLEU (greedy; mean over the seeds, with the
spread), decode at least 8x as many sentences/s as its teacher's beam 5, and stay within
1 BLEU of that beam 5? The teacher gets more than the student, as in practice (a teacher is
trained once, for long, and teaches many students): ``--teacher-minutes`` each for
``--teachers`` models decoded as one ensemble (or ``--teacher`` run directories, one or
several), against ``--minutes`` for the student and the baseline.

On one host, in one run (each step can also take an earlier step's result instead):

1. the teacher: ``--teachers`` models of configs/multi30k.yaml (seeds ``--seed``, +1, ...),
   ``--teacher-minutes`` of training each, side by side as the cores allow; or taken with
   ``--teacher RUN_DIR`` (repeatable: an ensemble);
2. ``python -m translate.distill --stage translate``: the teacher's beam search over the 29k
   training sources (timed: lines/s);
3. ``--minutes`` of training each, ``--threads`` each, as many side by side as the cores
   allow (so every model gets its minutes of CPU), for every ``--seed``: the student on the
   distilled corpus (configs/student.yaml) and the baseline, the same configs/student.yaml
   trained on the original data (or taken with ``--baseline RUN_DIR``, one per seed); then, with
   ``--keep-references``, a student on the distilled corpus plus the original references;
4. every model on test2016 (1000 sentences): BLEU, chrF and decoding sentences/s for beam 5
   and greedy in fp32, bf16 (where the CPU has it natively) and dynamic int8. Decoding only
   is timed (each model is loaded outside the clock); fp32 and bf16 alternate (ABBA) over
   ``--repeats``, int8 runs last (it changes the process's malloc settings, as
   ``infer --quantize`` does).

With two 30-minute teachers and two seeds on 2 cores, one thread each: 30 + translation
(~10-25) + 2 x 20 + ~15 minutes. Prints one JSON object (stdout, and ``--out``) and a
summary with the three targets on stderr.

    python -m bench distill [--teacher RUN_DIR ...] [--teachers 2] [--teacher-minutes 30]
                            [--baseline RUN_DIR] [--work runs/bench-distill] [--minutes 20]
                            [--threads 1] [--seed 1234 --seed 7] [--keep-references]
                            [--repeats 1] [--select best|closest]
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
# The targets: the student (greedy) at least this many times its teacher's beam-5
# sentences/s, at most this far below the teacher's beam-5 BLEU, and at least this far above
# the same-size baseline (greedy, the mean over the seeds).
SPEEDUP, BLEU_VS_TEACHER, BLEU_VS_BASELINE = 8.0, -1.0, 1.0


def _common(run_dir: Path, minutes: float, threads: int, seed: int) -> list[str]:
    return ["--set", f"training.run_dir={run_dir}", "--set", f"training.max_minutes={minutes}",
            "--set", f"training.num_threads={threads}", "--set", "logging.wandb=disabled",
            "--set", f"training.seed={seed}"]


def _side_by_side(jobs: dict[str, list[str]], work: Path, threads: int, what: str) -> None:
    """Run the ``python -m`` jobs, as many at once as the cores hold at ``threads`` each."""
    failed = []
    for wave in waves(list(jobs), os.cpu_count() or 1, threads):
        _log(f"{what}: {', '.join(wave)} side by side, {threads} thread(s) each")
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


def train_teachers(work: Path, count: int, minutes: float, threads: int,
                   seed: int) -> list[Path]:
    """``count`` configs/multi30k.yaml models, seeds ``seed``, ``seed + 1``...: the members
    of the teacher ensemble (one model when ``count`` is 1). They share one tokenizer: the
    same config on the same data trains the same one whatever the seed."""
    runs = [work / ("teacher" if count == 1 else f"teacher{i + 1}") for i in range(count)]
    jobs = {run.name: ["translate.train", "--config", "configs/multi30k.yaml", "--overwrite",
                       *_common(run, minutes, threads, seed + i)]
            for i, run in enumerate(runs)}
    _side_by_side(jobs, work, threads, f"training the teacher for {minutes} minutes")
    return runs


def _teacher_args(teachers: list[Path]) -> list[str]:
    return [arg for t in teachers for arg in ("--teacher", str(t))]


def distill_corpus(teachers: list[Path], work: Path, threads: int, select: str | None) -> dict:
    """The translate stage, timed; the corpus lands in work/distilled (shared by the
    students)."""
    _log(f"translating the training sources with {' + '.join(map(str, teachers))}")
    seconds = _command(["translate.distill", *_teacher_args(teachers), "--config",
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
    so each gets its minutes of CPU as well as of wall clock; the optional students with
    the references kept last (on 2 cores with one thread each they wait for the others)."""
    at_once = max(1, cores // max(1, threads))
    order = sorted(names, key=lambda name: name.startswith("student_refs"))
    return [order[i:i + at_once] for i in range(0, len(order), at_once)]


def _name(kind: str, seed: int, seeds: list[int]) -> str:
    """A run's name: ``student``, or ``student-s7`` when there are several seeds."""
    return kind if len(seeds) == 1 else f"{kind}-s{seed}"


def train_side_by_side(teachers: list[Path], work: Path, minutes: float, threads: int,
                       keep_references: bool, baselines: list[Path] | None,
                       seeds: list[int]) -> dict[str, Path]:
    """The students (and the baselines, unless given: one per seed, in order) of every
    seed, ``threads`` each, as many at once as the cores allow."""
    jobs: dict[str, list[str]] = {}
    runs: dict[str, Path] = {}
    variants = [("student", False)] + ([("student_refs", True)] if keep_references else [])
    for seed in seeds:
        for kind, keep in variants:
            name = _name(kind, seed, seeds)
            runs[name] = work / name
            jobs[name] = ["translate.distill", *_teacher_args(teachers), "--config",
                          "configs/student.yaml", "--stage", "train", "--overwrite",
                          *_common(runs[name], minutes, threads, seed),
                          "--set", f"distill.output={work / 'distilled'}",
                          "--set", f"distill.keep_references={str(keep).lower()}"]
        name = _name("baseline", seed, seeds)
        if not baselines:
            runs[name] = work / name
            jobs[name] = ["translate.train", "--config", "configs/student.yaml",
                          "--overwrite", *_common(runs[name], minutes, threads, seed)]
        else:
            runs[name] = baselines[seeds.index(seed)]
    _side_by_side(jobs, work, threads, f"training for {minutes} minutes")
    return runs


def _steps(run: Path) -> int | None:
    summary = run / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        return data.get("step") or data.get("steps")
    return None


def _minutes(run: Path) -> float | None:
    """The training minutes a run was given (its config's training.max_minutes)."""
    from translate import config

    try:
        return config.load(run / "config.yaml").training.max_minutes
    except (OSError, config.ConfigError):
        return None


def evaluate(runs: dict[str, list[Path]], threads: int, repeats: int,
             limit: int = 0) -> list[dict]:
    """BLEU and decoding sentences/s of every model (several runs: one ensemble) x search x
    precision on test2016."""
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
        kind, _, seed = name.partition("-s")
        row = rows.setdefault(key, {"model": kind, "seed": int(seed) if seed else None,
                                    "beam": beam, "precision": precision, "seconds": []})
        row["seconds"].append(seconds)
        scores = bleu_chrf([r.text for r in out], ref)
        row.update(bleu=scores["bleu"], chrf=scores["chrf"])

    def load(run: list[Path], **kw):
        return Translator.load(run if len(run) > 1 else run[0], device="cpu", **kw)

    for name, run in runs.items():
        models = {p: load(run, precision=p, quantize=False) for p in precisions}
        for rep in range(repeats):
            for beam in (5, 1):
                order = precisions if rep % 2 == 0 else precisions[::-1]
                for p in order:
                    one(name, models[p], beam, p)
                    _log(f"{name} beam {beam} {p}: {rows[(name, beam, p)]['bleu']} BLEU")
    tuning.retain_freed_memory()  # as infer --quantize does, after the other precisions
    for name, run in runs.items():
        tr = load(run, precision="fp32", quantize=True)
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


def _compare(rows: list[dict], seed: int | None, precision: str | None) -> dict:
    """The three comparisons for the student and baseline of ``seed`` (each model at
    ``precision``, or at its fastest when None)."""
    def get(model: str, beam: int, seed: int | None = None) -> dict:
        cands = [r for r in rows if r["model"] == model and r["beam"] == beam
                 and (precision is None or r["precision"] == precision)
                 and (model == "teacher" or r.get("seed") == seed)]
        return max(cands, key=lambda r: r["sentences_per_s"])

    t5, s1, b1 = get("teacher", 5), get("student", 1, seed), get("baseline", 1, seed)
    return {
        "teacher_beam5": {k: t5[k] for k in ("precision", "bleu", "sentences_per_s")},
        "student_greedy": {k: s1[k] for k in ("precision", "bleu", "sentences_per_s")},
        "baseline_greedy": {k: b1[k] for k in ("precision", "bleu", "sentences_per_s")},
        "speedup": round(s1["sentences_per_s"] / t5["sentences_per_s"], 2),
        "bleu_vs_teacher": round(s1["bleu"] - t5["bleu"], 2),
        "bleu_vs_baseline": round(s1["bleu"] - b1["bleu"], 2),
    }


def targets(rows: list[dict]) -> dict:
    """The three targets, each in fp32 and at each model's fastest precision: per seed, and
    their mean and spread (max - min) over the seeds, against which they are met or not."""
    seeds = sorted({r.get("seed") for r in rows if r["model"] == "student"},
                   key=lambda s: (s is None, s))
    out = {}
    for label, precision in (("fp32", "fp32"), ("fastest", None)):
        per_seed = {str(seed): _compare(rows, seed, precision) for seed in seeds}
        summary: dict = {}
        for key in ("speedup", "bleu_vs_teacher", "bleu_vs_baseline"):
            values = [c[key] for c in per_seed.values()]
            summary[key] = round(statistics.mean(values), 2)
            summary[f"{key}_spread"] = round(max(values) - min(values), 2)
        summary["met"] = {f"speedup>={SPEEDUP:g}": summary["speedup"] >= SPEEDUP,
                          f"bleu_vs_teacher>={BLEU_VS_TEACHER:g}":
                              summary["bleu_vs_teacher"] >= BLEU_VS_TEACHER,
                          f"bleu_vs_baseline>={BLEU_VS_BASELINE:g}":
                              summary["bleu_vs_baseline"] >= BLEU_VS_BASELINE}
        out[label] = {**summary, "seeds": per_seed}
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
    p.add_argument("--teacher", type=Path, action="append",
                   help="a trained teacher; repeat it for an ensemble teacher (default: train "
                        "--teachers models for --teacher-minutes each)")
    p.add_argument("--teachers", type=int, default=1,
                   help="how many models the trained teacher ensemble has (default 1)")
    p.add_argument("--teacher-minutes", type=float,
                   help="training minutes of each teacher model trained here (default: "
                        "--minutes; the budget of given teachers is read from their config)")
    p.add_argument("--baseline", type=Path, action="append",
                   help="a configs/student.yaml run without distillation, trained with the "
                        "--seed of the same position (repeat it with --seed; default: train "
                        "one per seed)")
    p.add_argument("--student", type=Path,
                   help="an already distilled student (skips translating and training it)")
    p.add_argument("--work", type=Path, default=Path("runs/bench-distill"))
    p.add_argument("--minutes", type=float, default=20.0,
                   help="training minutes of the student and of the baseline (default 20)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per training process and for decoding test2016")
    p.add_argument("--translate-threads", type=int, default=0,
                   help="torch threads of the translate stage (default: --threads)")
    p.add_argument("--keep-references", action="store_true",
                   help="also train a student on the distilled corpus plus the references")
    p.add_argument("--select", choices=("best", "closest"),
                   help="distill.select: the teacher's best hypothesis or, of its n-best, the "
                        "one closest to the reference (default: configs/student.yaml's)")
    p.add_argument("--seed", type=int, action="append",
                   help=f"training.seed of a student and its baseline (repeat it for the "
                        f"seed spread; default {SEED}); teachers trained here take the first, "
                        "+1, +2...")
    p.add_argument("--repeats", type=int, default=1, help="timed decodes per row")
    p.add_argument("--limit", type=int, default=0,
                   help="decode only the first N test sentences (0: all 1000)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    args.seed = args.seed or [SEED]
    if len(set(args.seed)) != len(args.seed):
        p.error(f"--seed: each seed once, got {args.seed}")
    if args.baseline and len(args.baseline) != len(args.seed):
        p.error(f"--baseline: one per --seed, in the same order: {len(args.baseline)} "
                f"baseline(s) for seeds {args.seed}")
    if args.student and len(args.seed) > 1:
        p.error("--student is one seed's run: give one --seed with it")
    if args.teachers < 1:
        p.error(f"--teachers: at least 1, got {args.teachers}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result: dict = {"date": started, "cpu": _cpu(), "cores": os.cpu_count(),
                    "commit": _commit(), "argv": sys.argv[1:] if argv is None else argv,
                    "minutes": args.minutes, "threads": args.threads, "seeds": args.seed,
                    "translate_threads": args.translate_threads or args.threads}
    teachers = args.teacher or train_teachers(args.work, args.teachers,
                                              args.teacher_minutes or args.minutes,
                                              args.threads, args.seed[0])
    minutes = [_minutes(t) for t in teachers]
    result["teacher"] = {"runs": [str(t) for t in teachers], "minutes": minutes,
                         "steps": [_steps(t) for t in teachers]}
    if all(minutes):
        result["teacher"]["budget_vs_student"] = round(sum(minutes) / args.minutes, 2)
    runs: dict[str, list[Path]] = {"teacher": teachers}
    if args.student:
        runs["student"] = [args.student]
        if args.baseline:
            runs["baseline"] = args.baseline
    else:
        result["translate"] = distill_corpus(teachers, args.work,
                                             args.translate_threads or args.threads,
                                             args.select)
        result["select"] = result["translate"]["search"]["select"]
        trained = train_side_by_side(teachers, args.work, args.minutes, args.threads,
                                     args.keep_references, args.baseline, args.seed)
        runs.update({name: [run] for name, run in trained.items()})
    result["steps"] = {name: [_steps(r) for r in run] for name, run in runs.items()}
    result["runs"] = {name: [str(r) for r in run] for name, run in runs.items()}
    _log("decoding test2016 with every model")
    result["decoding"] = evaluate(runs, args.threads, args.repeats, args.limit)
    if any(r["model"] == "baseline" for r in result["decoding"]):
        result["targets"] = targets(result["decoding"])
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    for row in result["decoding"]:
        seed = f"-s{row['seed']}" if row["seed"] is not None and len(args.seed) > 1 else ""
        print(f"{row['model'] + seed:16s} beam {row['beam']} {row['precision']:5s} BLEU "
              f"{row['bleu']:6.2f} chrF {row['chrf']:6.2f} {row['sentences_per_s']:8.1f} sent/s",
              file=sys.stderr)
    budget = result["teacher"].get("budget_vs_student")
    print(f"teacher: {len(teachers)} model(s), {minutes} minutes"
          + (f" ({budget}x the student's)" if budget else ""), file=sys.stderr)
    for label, t in result.get("targets", {}).items():
        print(f"{label}: student greedy {t['speedup']}x the teacher's beam 5 (spread "
              f"{t['speedup_spread']}), BLEU {t['bleu_vs_teacher']:+.2f} vs the teacher "
              f"(spread {t['bleu_vs_teacher_spread']}), {t['bleu_vs_baseline']:+.2f} vs the "
              f"baseline (spread {t['bleu_vs_baseline_spread']}); met: {t['met']}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
