"""Dev BLEU per domain of trained runs, with the decoder told different domains; prints JSON.

For each ``--model`` run and each labelled dev set of ``../shared/data`` (Multi30k ``val`` as
``captions`` and the eight ``multidomain-de-en`` folders' ``dev``), the first ``--lines``
sentences are translated

* ``plain``: a run without domain conditioning, as it is;
* ``none`` / ``predicted`` / ``gold``: a conditioned run told no domain, the tagger's
  thresholded prediction, or the dev set's own label;
* ``wrong``: a conditioned run forced to ``--wrong`` (a fixed other label) on every domain's
  sentences, and ``changed_vs_gold``: the share of lines whose output differs from ``gold``.

Only the domains a run knows are scored. Usage::

    python scripts/bench_conditioning.py --model runs/cond --model runs/plain --lines 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DOMAINS = ["religion", "it", "legal", "medical", "subtitles", "chat", "general", "news"]


def dev_sets(data: Path, lines: int) -> dict[str, tuple[list[str], list[str]]]:
    prefixes = {"captions": data / "multi30k" / "val"}
    prefixes |= {d: data / "multidomain-de-en" / d / "dev" for d in DOMAINS}
    out = {}
    for label, prefix in prefixes.items():
        src = Path(f"{prefix}.de").read_text(encoding="utf-8").splitlines()[:lines]
        ref = Path(f"{prefix}.en").read_text(encoding="utf-8").splitlines()[:lines]
        out[label] = (src, ref)
    return out


def score_run(run: str, sets: dict, beam: int, wrong: str | None) -> dict:
    from translate.inference.translator import Translator
    from translate.tracking.metrics import bleu_chrf

    tr = Translator.load(run, device="cpu")
    conditioned = bool(tr.model.conditioned)
    modes = ["none", "predicted", "gold"] if conditioned else ["plain"]
    if conditioned and wrong in tr.labels:
        modes.append("wrong")
    rows = {}
    for label, (src, ref) in sets.items():
        if tr.labels and label not in tr.labels:
            continue
        row, texts = {}, {}
        for mode in modes:
            domains = {"plain": None, "predicted": None, "none": "none", "gold": label,
                       "wrong": wrong}[mode]
            out = tr.translate(src, beam=beam, domains=domains)
            texts[mode] = [r.text for r in out]
            row[mode] = round(bleu_chrf(texts[mode], ref)["bleu"], 2)
            if mode == "predicted":
                row["tagged_own_label"] = round(sum(label in r.domains for r in out) / len(out), 3)
        if "gold" in texts:
            for mode in ("none", "predicted", "wrong"):
                if mode in texts:
                    changed = sum(a != b for a, b in zip(texts[mode], texts["gold"], strict=True))
                    row[f"changed_{mode}_vs_gold"] = round(changed / len(src), 3)
        rows[label] = row
    mean = {m: round(sum(r[m] for r in rows.values()) / len(rows), 2) for m in modes}
    return {"run": run, "conditioned": conditioned, "beam": beam, "per_domain": rows,
            "mean_bleu": mean}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, help="run directory (repeatable)")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--lines", type=int, default=200, help="first N lines of each dev set")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--wrong", default="religion", help="the label forced in mode 'wrong'")
    args = p.parse_args()
    from translate.tuning import apply_process_tuning

    apply_process_tuning(inference=True)
    sets = dev_sets(Path(args.data), args.lines)
    t0 = time.perf_counter()
    results = [score_run(run, sets, args.beam, args.wrong) for run in args.model]
    print(json.dumps({"lines_per_domain": args.lines, "results": results,
                      "seconds": round(time.perf_counter() - t0, 1)}, indent=2))


if __name__ == "__main__":
    main()
