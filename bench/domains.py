"""Domain benchmark: tagger F1 and per-domain dev BLEU of runs; ~4 min a run, +20 with --train.

For each run (``--runs DIR ...``, or one trained here first with ``--train``) the pooled
labelled dev sets of its config (``configs/multidomain.yaml``: Multi30k ``val`` as captions
and the eight ``multidomain-de-en`` dev sets, whole files by default) are translated once per
decoding mode and scored per domain (BLEU, chrF, sacrebleu signatures) and pooled; the
tagger's probabilities on the same sentences give micro/macro-F1 and mAP over the labels at
the thresholds the run tuned on validation, per-label F1 and the confusion between domains
(for each gold domain, how often each label was predicted). The time: one greedy decode of
the whole dev sets takes about 1 minute on 1 thread, once per mode.

Modes: ``plain`` translates as ``Translator.translate`` does by default (the only mode of a
run without domain conditioning). A domain-conditioned run (``model.conditioned``) is decoded
with ``none`` (conditioning off), ``predicted`` (the tagger's labels, what plain does for it)
and ``gold`` (each sentence's own labels, one call per label set); on request (``--modes``)
also ``wrong``: every sentence forced to one fixed label (``--wrong``, default religion), to
see how much a wrong domain costs. These go through ``Translator.translate(domains=...)`` and
are skipped (listed in ``skipped_modes``) for runs and code versions without it, ``wrong``
also when the run does not know the label. With ``gold`` decoded, every other mode reports
``changed_vs_gold``: the share of sentences whose translation differs from gold's, pooled and
per domain. ``--modes`` picks a subset.

    python -m bench domains --runs runs/plain runs/cond --names plain cond
    python -m bench domains --train --minutes 20 --threads 2 --names multidomain
    python -m bench domains --runs runs/multidomain --max-pairs 100 --beam 1
    python -m bench domains --runs runs/cond --modes gold,wrong --wrong religion --max-pairs 200

With two runs or more, ``compare`` gives each later run's mean per-domain BLEU minus the
first run's (its first mode) and its worst single-domain difference, per mode.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

from bench._tag_scores import confusion, f1_scores, multi_hot
from translate import tuning

ROOT = Path(__file__).resolve().parents[1]
MODES = ("plain", "none", "predicted", "gold", "wrong")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="*", default=[], metavar="RUN_DIR")
    ap.add_argument("--names", nargs="*", default=[], help="a label per run (default: dir name)")
    ap.add_argument("--train", action="store_true", help="train --config first, add its run")
    ap.add_argument("--config", default=str(ROOT / "configs" / "multidomain.yaml"),
                    help="config to train (--train) and whose dev sets to score "
                         "(default for scoring: each run's own config)")
    ap.add_argument("--minutes", type=float, default=20.0, help="--train wall-clock budget")
    ap.add_argument("--run-dir", default="runs/bench_domains", help="--train's run directory")
    ap.add_argument("--overwrite", action="store_true",
                    help="--train over an earlier run in --run-dir (deleting it first)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for --train and for reading the dev sets")
    ap.add_argument("--max-pairs", type=int, default=0,
                    help="dev pairs per domain (0 = whole dev sets)")
    ap.add_argument("--modes", default="", help="comma-separated subset of " + ",".join(MODES))
    ap.add_argument("--wrong", default="religion",
                    help="the label every sentence is forced to in mode 'wrong'")
    ap.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args()


def train(args: argparse.Namespace) -> tuple[str, dict]:
    from translate import config
    from translate.training.trainer import Trainer

    overrides = [*args.overrides, f"training.run_dir={args.run_dir}",
                 f"training.max_minutes={args.minutes}", "logging.wandb=disabled"]
    cfg = config.load(args.config, overrides)
    t0 = time.perf_counter()
    summary = Trainer(cfg, overwrite=args.overwrite).fit()
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return args.run_dir, summary


# --------------------------------------------------------------------------- decoding


def supports_conditioning(translator) -> bool:
    """The hook for domain conditioning: a ``domains=`` keyword of translate() and a model
    that was trained with it."""
    params = inspect.signature(translator.translate).parameters
    return "domains" in params and bool(getattr(translator.model, "conditioned", False))


def translate(translator, src: list[str], mode: str, gold: list[list[str]], beam: int,
              wrong: str = ""):
    """Translations of ``src`` in ``mode``; gold decodes each distinct label set apart."""
    if mode == "plain":
        return translator.translate(src, beam=beam)
    if mode == "wrong":
        return translator.translate(src, beam=beam, domains=[wrong])
    if mode in ("none", "predicted"):
        return translator.translate(src, beam=beam,
                                    domains="none" if mode == "none" else None)
    out: list = [None] * len(src)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, labels in enumerate(gold):
        groups.setdefault(tuple(lab for lab in labels if lab in translator.labels), []).append(i)
    for labels, rows in groups.items():
        results = translator.translate([src[i] for i in rows], beam=beam,
                                       domains=list(labels) if labels else "none")
        for i, r in zip(rows, results, strict=True):
            out[i] = r
    return out


# --------------------------------------------------------------------------- scoring


def tagger_scores(results, gold: list[list[str]], labels: list[str],
                  thresholds: list[float]) -> dict:
    import numpy as np

    probs = np.array([[r.domain_probs.get(lab, 0.0) for lab in labels] for r in results])
    return {**f1_scores(probs, multi_hot(gold, labels), thresholds, labels, ranking=True),
            "thresholds": dict(zip(labels, thresholds, strict=True)),
            "confusion": confusion([list(r.domains) for r in results], gold)}


def changed_vs(texts: list[str], base: list[str], gold: list[list[str]]) -> dict:
    """The share of sentences whose ``texts`` differ from ``base``: pooled and per gold label."""
    per: dict[str, list[int]] = {}
    for text, other, labels in zip(texts, base, gold, strict=True):
        for lab in labels:
            counts = per.setdefault(lab, [0, 0])
            counts[0] += text != other
            counts[1] += 1
    changed = sum(a != b for a, b in zip(texts, base, strict=True))
    return {"pooled": round(changed / max(len(texts), 1), 3),
            "per_domain": {lab: round(c / n, 3) for lab, (c, n) in sorted(per.items())}}


def score_run(run: str, args: argparse.Namespace, modes: list[str]) -> dict:
    from translate.evaluate import load_split, report
    from translate.inference.translator import Translator

    tr = Translator.load(run, device="cpu")
    cfg_path = args.config if args.config_given else Path(run) / "config.yaml"
    src, refs, gold = load_split(cfg_path, args.overrides, "valid", args.max_pairs)
    # A conditioned run's plain decode is its predicted one: not run twice by default.
    wanted = modes or (["none", "predicted", "gold"] if supports_conditioning(tr)
                       else ["plain"])
    out: dict = {"run": run, "checkpoint": str(tr.checkpoint_path), "sentences": len(src),
                 "modes": {}, "skipped_modes": []}
    texts: dict[str, list[str]] = {}
    for mode in wanted:
        if (mode != "plain" and not supports_conditioning(tr)) or (
                mode == "wrong" and args.wrong not in tr.labels):
            out["skipped_modes"].append(mode)
            continue
        t0 = time.perf_counter()
        results = translate(tr, src, mode, gold, args.beam, args.wrong)
        seconds = time.perf_counter() - t0
        texts[mode] = [r.text for r in results]
        scored = report(texts[mode], refs, gold)
        bleus = [d["bleu"] for d in scored["domains"].values()]
        out["modes"][mode] = {"bleu": {d: s["bleu"] for d, s in scored["domains"].items()},
                              "chrf": {d: s["chrf"] for d, s in scored["domains"].items()},
                              "mean_domain_bleu": round(sum(bleus) / len(bleus), 2),
                              "pooled": scored["pooled"], "decode_seconds": round(seconds, 1)}
        out["signatures"] = scored["signatures"]
        out["n"] = {d: s["n"] for d, s in scored["domains"].items()}
        if "tagger" not in out and tr.labels and results and results[0].domain_probs:
            out["tagger"] = tagger_scores(results, gold, tr.labels, tr.thresholds)
    if "wrong" in out["modes"]:
        out["modes"]["wrong"]["label"] = args.wrong
    for mode in out["modes"]:
        if "gold" in texts and mode != "gold":
            out["modes"][mode]["changed_vs_gold"] = changed_vs(texts[mode], texts["gold"], gold)
    return out


def compare(named: dict[str, dict]) -> dict:
    """Later runs against the first run's first mode: mean and worst per-domain BLEU delta."""
    (base_name, base), *rest = named.items()
    if not base["modes"]:
        return {}
    base_mode = next(iter(base["modes"]))
    ref = base["modes"][base_mode]["bleu"]
    out = {"baseline": f"{base_name}/{base_mode}"}
    for name, res in rest:
        for mode, m in res["modes"].items():
            common = [d for d in m["bleu"] if d in ref]
            deltas = {d: round(m["bleu"][d] - ref[d], 2) for d in common}
            if deltas:
                out[f"{name}/{mode}"] = {
                    "mean_delta": round(sum(deltas.values()) / len(deltas), 2),
                    "worst_delta": min(deltas.values()), "deltas": deltas}
    return out


def main() -> None:
    args = parse_args()
    args.config_given = "--config" in sys.argv
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        sys.exit(f"bench domains: unknown mode {bad[0]!r}; expected {', '.join(MODES)}")
    tuning.apply_process_tuning(inference=True)  # before torch loads (with bench._common)
    from bench._common import cpu_capability, load_average, pin_threads

    pin_threads(args.threads)
    runs, trained = list(args.runs), {}
    if args.train:
        run, trained = train(args)
        runs.append(run)
    if not runs:
        sys.exit("bench domains: give --runs DIR ... or --train")
    names = list(args.names) + [Path(r).name for r in runs[len(args.names):]]
    result: dict = {"load_average": load_average(), "cpu": cpu_capability(),
                    "threads": args.threads, "beam": args.beam,
                    "max_pairs_per_domain": args.max_pairs, "runs": {}}
    for name, run in zip(names, runs, strict=False):
        result["runs"][name] = score_run(run, args, modes)
        if trained and run == args.run_dir:
            result["runs"][name]["train"] = trained
    if len(result["runs"]) > 1:
        result["compare"] = compare(result["runs"])
    result["load_average_after"] = load_average()
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
