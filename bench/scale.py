"""Large-corpus benchmark: preparation and training start-up on a synthetic corpus; ~10 min.

Builds ``--pairs`` distinct training pairs (default 5M) from the real sentences in
``../shared/data`` (every Multi30k and multi-domain training pair): each synthetic pair joins
2-3 random real pairs with a space on both sides, so lengths and vocabulary stay realistic,
and candidates the cleaner would drop (too long, length ratio, duplicates) are not written.
The corpus goes to plain ``train.de`` / ``train.en`` files in ``--workdir`` (a temporary
directory by default; never in the repository), with ``configs/quality.yaml``'s model and
batching pointed at it (no validation or test split: the steps are what is measured).

Then, each in its own child process so that ``ru_maxrss`` (from ``os.wait4``) is its own:

1. **prepare** (cold cache): read + clean + cache the corpus, train the tokenizer (on its
   bounded sample), encode the splits to disk. Prints wall times per phase, pairs/s of
   read + clean + encode, on-disk bytes per token of the encoded corpus, peak RSS.
2. **train** (warm cache): ``python -m translate.train --config ... --set training.max_steps=N``
   -- time from launch to the first step's metrics line, peak RSS of the whole process and
   through the last step (before the end-of-run shortlist), tokens/s over the steps after
   the first few.
3. **reference** (unless ``--no-reference``): the same training on Multi30k alone
   (``configs/quality.yaml`` as it is), for the tokens/s and RSS a small corpus gets.

    python -m bench scale [--pairs 5000000] [--steps 20] [--workdir DIR] [--keep]
                          [--threads 2] [--no-reference] [--input-sentence-size N]
                          [--prepare-only] [--repo DIR]

``--prepare-only`` stops after the prepare phase. ``--repo DIR`` runs the children on another
checkout's ``translate`` package (an older commit, for a before/after on one host). With
``--workdir``, a corpus synthesized there before with the same ``--pairs`` is reused, and the
caches and run directories are removed before each phase, so preparation is always cold.

Prints one JSON object on stdout; progress goes to stderr. With the defaults (5M pairs, de→en
from the real pairs) it takes about 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CONFIG = ROOT / "configs" / "quality.yaml"
MAX_CHARS, MAX_RATIO, MIN_CHARS_FOR_RATIO = 400, 3.0, 10  # CleaningConfig's defaults


def _say(msg: str) -> None:
    print(f"[bench_scale] {msg}", file=sys.stderr, flush=True)


def _read(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def real_pairs(shared: Path) -> tuple[list[str], list[str]]:
    """Every real de-en training pair beside the repo (Multi30k and the multi-domain folders)."""
    prefixes = [shared / "multi30k" / "train"]
    prefixes += sorted(p.with_suffix("") for p in (shared / "multidomain-de-en").glob("*/train.de"))
    src, tgt = [], []
    for prefix in prefixes:
        de, en = _read(prefix.with_suffix(".de")), _read(prefix.with_suffix(".en"))
        for s, t in zip(de, en, strict=True):
            s, t = s.strip(), t.strip()
            if s and t and "\r" not in s + t:
                src.append(s)
                tgt.append(t)
    return src, tgt


def _keeps(s: str, t: str) -> bool:
    if len(s) > MAX_CHARS or len(t) > MAX_CHARS:
        return False
    short, long_ = sorted((len(s), len(t)))
    return short < MIN_CHARS_FOR_RATIO or long_ / short <= MAX_RATIO


def synthesize(n: int, out: Path, seed: int = 0) -> dict:
    """Write ``n`` distinct pairs that the cleaner keeps to ``out``.de/.en."""
    src, tgt = real_pairs(SHARED)
    rng = np.random.default_rng(seed)
    seen: set[int] = set()
    written = tries = 0
    start = time.perf_counter()
    with open(f"{out}.de", "w", encoding="utf-8") as fs, open(f"{out}.en", "w",
                                                              encoding="utf-8") as ft:
        while written < n:
            block = 200_000
            parts = rng.integers(2, 4, size=block)
            picks = rng.integers(0, len(src), size=(block, 3))
            de_lines, en_lines = [], []
            for k, row in zip(parts.tolist(), picks.tolist(), strict=True):
                tries += 1
                s = " ".join(src[i] for i in row[:k])
                t = " ".join(tgt[i] for i in row[:k])
                key = hash((s, t))
                if key in seen or not _keeps(s, t):
                    continue
                seen.add(key)
                de_lines.append(s)
                en_lines.append(t)
                written += 1
                if written == n:
                    break
            fs.write("\n".join(de_lines) + "\n")
            ft.write("\n".join(en_lines) + "\n")
    return {"real_pairs": len(src), "pairs": written, "candidates": tries,
            "seconds": round(time.perf_counter() - start, 1),
            "bytes": os.path.getsize(f"{out}.de") + os.path.getsize(f"{out}.en")}


def corpus_for(n: int, work: Path) -> dict:
    """The synthetic corpus in ``work``: reused when one of ``n`` pairs is already there."""
    stamp = work / "corpus.json"
    if stamp.is_file() and all((work / f"train.{x}").is_file() for x in ("de", "en")):
        info = json.loads(stamp.read_text(encoding="utf-8"))
        if info.get("pairs") == n:
            return {**info, "reused": True}
    info = synthesize(n, work / "train")
    stamp.write_text(json.dumps(info), encoding="utf-8")
    return info


def write_config(path: Path, train_prefix: Path, cache: Path, run_dir: Path,
                 input_sentence_size: int | None) -> None:
    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    if input_sentence_size is not None:
        raw["tokenizer"]["input_sentence_size"] = input_sentence_size
    raw["data"] = {"src_lang": "de", "tgt_lang": "en", "cache_dir": str(cache),
                   "train": [{"kind": "text", "prefix": str(train_prefix)}],
                   "valid": [], "test": []}
    raw["training"]["run_dir"] = str(run_dir)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


def _peak_so_far(pid: int) -> float | None:
    """VmHWM (peak RSS so far, MB) of a running process."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_child(cmd: list[str], env: dict, watch=None,
              cwd: Path = ROOT) -> tuple[int, float, float, str, str]:
    """(returncode, wall seconds, peak RSS MB, stdout, stderr) of one child process.

    ``watch(pid)``, when given, is called twice a second while the child runs."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if watch else 0)
            if pid:
                break
            watch(proc.pid)
            time.sleep(0.5)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return proc.returncode, wall, usage.ru_maxrss / 1024, out.read(), err.read()


PREPARE = """
import json, sys, time
t0 = time.perf_counter()
from translate import config
from translate.training.prepare import prepare
from translate.runs.rundir import RunDir
cfg = config.load(sys.argv[1])
imports = time.perf_counter() - t0
stamps = []

def hwm():
    # peak RSS so far (MB), so the log says how much each phase had reached
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024

data = prepare(cfg, RunDir(cfg.training.run_dir).create(),
               log=lambda m: stamps.append((round(time.perf_counter() - t0, 2), hwm(), m)))
train = data.splits["train"]
if hasattr(train.src_ids, "lengths"):
    tokens = sum(sum(c.lengths()) for c in (train.src_ids, train.tgt_ids))
else:  # older code (--repo): splits as lists in memory, encoded every run
    tokens = sum(len(r) for c in (train.src_ids, train.tgt_ids) for r in c)
encoded = data.report.get("encoded")
print(json.dumps({"total": time.perf_counter() - t0, "imports": imports,
                  "corpus": data.report["seconds"], "encoded": encoded,
                  "pairs": len(train), "tokens": tokens,
                  "dropped": data.report["dropped"]["train"], "log": stamps}))
"""


def prepare_child(cfg_path: Path, env: dict, repo: Path = ROOT) -> dict:
    rc, wall, rss, out, err = run_child([sys.executable, "-c", PREPARE, str(cfg_path)], env,
                                        cwd=repo)
    if rc:
        raise SystemExit(f"prepare failed ({rc}):\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    # The peak once the corpus is read and cleaned: at the tokenizer's first message.
    read_clean_peak = next((h for _, h, m in res["log"] if m.startswith("tokenizer:")), None)
    enc = res["encoded"]
    if enc is None:  # older code (--repo): encoding ran in memory, timed by its log line
        enc = {"seconds": _legacy_encode_seconds(res), "bytes": None}
    tok_s = res["total"] - res["imports"] - res["corpus"] - enc["seconds"]
    read_clean_encode = res["corpus"] + enc["seconds"]
    sentencepiece = [float(m.split(" in ")[-1].split("s ->")[0]) for _, _, m in res["log"]
                     if m.startswith("tokenizer: trained ") and "s -> " in m]
    return {
        "wall_s": round(wall, 1), "imports_s": round(res["imports"], 1),
        "read_clean_cache_s": round(res["corpus"], 1), "tokenizer_s": round(tok_s, 1),
        "sentencepiece_train_s": round(sum(sentencepiece), 1),
        "encode_s": round(enc["seconds"], 1),
        "pairs_per_s_read_clean_encode": round(res["pairs"] / read_clean_encode),
        "pairs_per_s_with_tokenizer": round(res["pairs"] / res["total"]),
        "pairs": res["pairs"], "tokens": res["tokens"], "encoded_bytes": enc["bytes"],
        "bytes_per_token": round(enc["bytes"] / res["tokens"], 3) if enc["bytes"] else None,
        "pairs_per_s_read_clean": round(res["pairs"] / res["corpus"]),
        "peak_rss_mb": round(rss), "peak_rss_mb_after_read_clean": read_clean_peak,
        "dropped": res["dropped"],
        "log": [f"{t:7.1f}s {h:6d}MB {m}" for t, h, m in res["log"]],
    }


def _legacy_encode_seconds(res: dict) -> float:
    """Encoding time of older code (``--repo``) that encoded in memory and logs no line for it:
    from the last tokenizer message to the end of ``prepare``."""
    tok_done = max(t for t, _, m in res["log"] if m.startswith("tokenizer:"))
    return res["total"] - tok_done


def train_child(cfg_path: Path, run_dir: Path, steps: int, threads: int, env: dict,
                extra: list[str] = (), repo: Path = ROOT) -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "translate.train", "--config", str(cfg_path),
           "--set", f"training.run_dir={run_dir}", "--set", f"training.max_steps={steps}",
           "--set", "training.max_minutes=0", "--set", "training.valid_every=1000000",
           "--set", f"training.num_threads={threads}", "--set", "logging.log_every=1",
           "--set", "logging.wandb=disabled", *extra]
    launched = time.time()
    metrics = run_dir / "metrics.jsonl"
    at_last_step: list[float] = []

    def watch(pid: int) -> None:
        # The peak through the steps alone: the end of the run (the shortlist) comes after.
        if not at_last_step and metrics.is_file() and len(
                metrics.read_text().splitlines()) >= steps:
            at_last_step.append(_peak_so_far(pid) or float("nan"))

    rc, wall, rss, _, err = run_child(cmd, env, watch, cwd=repo)
    if rc:
        raise SystemExit(f"training failed ({rc}):\n{err[-3000:]}")
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps_rows = [r for r in rows if "train/tokens_per_s" in r or "tokens_per_s" in r]
    key = "train/tokens_per_s" if steps_rows and "train/tokens_per_s" in steps_rows[0] \
        else "tokens_per_s"
    rates = [r[key] for r in steps_rows[min(5, len(steps_rows) - 1):]]
    first = min(r["time"] for r in rows)
    return {"wall_s": round(wall, 1), "time_to_first_step_s": round(first - launched, 1),
            "peak_rss_mb": round(rss), "steps": len(steps_rows),
            "peak_rss_mb_through_last_step": round(at_last_step[0]) if at_last_step else None,
            "tokens_per_s_median": round(float(np.median(rates))) if rates else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=5_000_000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2, help="training.num_threads of the runs")
    p.add_argument("--workdir", type=Path, help="where the corpus and caches go "
                   "(default: a new temporary directory, removed unless --keep)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--input-sentence-size", type=int,
                   help="tokenizer.input_sentence_size (default: the config's)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the Multi30k reference training run")
    p.add_argument("--prepare-only", action="store_true",
                   help="stop after the prepare phase (no training runs)")
    p.add_argument("--repo", type=Path, default=ROOT,
                   help="the checkout whose translate package the children run")
    args = p.parse_args()
    repo = args.repo.resolve()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_scale-"))
    if work.resolve().is_relative_to(ROOT):
        raise SystemExit(f"--workdir {work} is inside the repository: the corpus must not be")
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(repo), "WANDB_MODE": "disabled",
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    result: dict = {"pairs_requested": args.pairs, "cores": os.cpu_count(),
                    "repo": str(repo), "commit": _commit(repo),
                    "load_before": [round(x, 2) for x in os.getloadavg()]}
    try:
        _say(f"synthesizing {args.pairs} pairs in {work}")
        result["corpus"] = corpus_for(args.pairs, work)
        cfg_path = work / "config.yaml"
        write_config(cfg_path, work / "train", work / "cache", work / "run",
                     args.input_sentence_size)
        for stale in ("cache", "run", "run-train", "run-ref", "cache-multi30k"):
            shutil.rmtree(work / stale, ignore_errors=True)
        _say("prepare (cold cache)")
        result["prepare"] = prepare_child(cfg_path, env, repo)
        if args.prepare_only:
            result["load_after"] = [round(x, 2) for x in os.getloadavg()]
            result["workdir"] = str(work)
            return
        _say(f"train {args.steps} steps (warm cache)")
        result["train_warm"] = train_child(cfg_path, work / "run-train", args.steps,
                                           args.threads, env, repo=repo)
        if not args.no_reference:
            _say(f"reference: train {args.steps} steps on Multi30k")
            ref_cfg = work / "multi30k.yaml"
            raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
            for group in ("train", "valid", "test"):
                for source in raw["data"][group]:
                    source["prefix"] = str(ROOT / source["prefix"])
            raw["data"]["cache_dir"] = str(work / "cache-multi30k")
            raw["data"]["valid"], raw["data"]["test"] = [], []
            ref_cfg.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
            # the first run fills its cache
            train_child(ref_cfg, work / "run-ref", 1, args.threads, env, repo=repo)
            result["train_multi30k"] = train_child(ref_cfg, work / "run-ref", args.steps,
                                                   args.threads, env, repo=repo)
        result["load_after"] = [round(x, 2) for x in os.getloadavg()]
        result["workdir"] = str(work)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(result, indent=1))


def _commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "translate"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return (out.stdout.strip() or None) and out.stdout.strip() + ("+dirty" if dirty else "")


if __name__ == "__main__":
    main()
