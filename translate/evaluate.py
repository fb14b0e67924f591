"""``python -m translate.evaluate --model RUN [--config CFG] --split test``: score by domain.

Translates a labelled split of a config's data (the run's own config unless ``--config``
names another; listed sources, or the part of ``data.unsplit`` that training held out),
prepared exactly as training prepares it, and prints one row per domain
(sentences, BLEU, chrF) plus the pooled row, with the sacrebleu signatures; ``--format json``
prints the same as one JSON object. A sentence with several labels counts in each of its
domains. ``--max-pairs N`` overrides every source's ``max_pairs`` in that split (0 = whole
files): configs/multidomain.yaml validates on the first 100 pairs of each dev set, and
``--split valid --max-pairs 0`` scores the complete dev sets.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from translate import config as config_mod
from translate import tuning
from translate.cli import ArgumentParser, help_text, non_negative, run_main
from translate.config import ConfigError
from translate.inference.model_args import add_model_arguments, first_run, load_translator

PROG = "python -m translate.evaluate"
SPLITS = ("valid", "test")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description=help_text(__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--config", help="YAML config whose data to score (default: the (first) "
                   "run's config.yaml); configs/NAME.yaml falls back to the packaged copy")
    p.add_argument("--split", default="test", help="valid or test (default: test)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of that config, e.g. --set data.valid[0].max_pairs=50")
    p.add_argument("--max-pairs", metavar="N", type=int,
                   help="pairs per source of the split (0 = all; default: the config's)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", default="fp32", choices=("fp32", "auto", "bf16", "fp16"))
    p.add_argument("--threads", metavar="N", type=non_negative, default=0,
                   help="CPU threads (0 = torch's default)")
    p.add_argument("--shortlist", choices=("on", "off"),
                   help="vocabulary shortlist (default: the run's inference config)")
    p.add_argument("--beam", metavar="N", type=int, help="beam size; 1 = greedy")
    p.add_argument("--batch-size", metavar="N", type=int, help="sentences per batch")
    return p


def load_split(cfg_path: str | Path, overrides: list[str], split: str,
               max_pairs: int | None) -> tuple[list[str], list[str], list[list[str]]]:
    """Sources, references and domain labels of ``split``, prepared as training does."""
    from translate.data import load_corpus
    from translate.data.schema import columns

    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    cfg = config_mod.load(cfg_path, overrides)
    sources = getattr(cfg.data, split)
    if not sources and not cfg.data.unsplit:
        raise ConfigError(f"{cfg_path}: data.{split} lists no sources and data.unsplit "
                          "none to split: nothing to score")
    if max_pairs is not None:
        if max_pairs < 0:
            raise ConfigError(f"--max-pairs: expected 0 (all) or more, got {max_pairs}")
        if max_pairs and not sources:
            # The split of data.unsplit is a hash of every row: capping its sources would
            # score a different sample, not a smaller one.
            raise ConfigError(f"--max-pairs {max_pairs}: data.{split} is split off "
                              "data.unsplit, not listed; use --max-pairs 0 (all)")
        for source in sources:
            source.max_pairs = max_pairs
    corpus = load_corpus(cfg.data, log=lambda _msg: None)
    src, ref, doms = columns(corpus.splits[split], "src", "tgt", "domains")
    if not any(doms):
        raise ConfigError(f"{cfg_path}: no row of data.{split} carries a domain label; give "
                          "its sources `domains: [...]` (or a domains_column)")
    return src, ref, [list(d) for d in doms]


def report(hyps: list[str], refs: list[str], domains: list[list[str]]) -> dict:
    """Per-domain and pooled scores with the signatures (what both formats print)."""
    from translate.tracking.metrics import bleu_chrf, domain_scores

    pooled = bleu_chrf(hyps, refs)
    per = domain_scores(hyps, refs, domains)
    return {
        "domains": {d: {"n": s["n"], "bleu": s["bleu"], "chrf": s["chrf"]}
                    for d, s in per.items()},
        "pooled": {"n": len(hyps), "bleu": pooled["bleu"], "chrf": pooled["chrf"]},
        "signatures": {"bleu": pooled["bleu_signature"], "chrf": pooled["chrf_signature"]},
    }


def format_table(result: dict) -> str:
    rows = list(result["domains"].items()) + [("pooled", result["pooled"])]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'domain':<{width}}  {'n':>6}  {'BLEU':>6}  {'chrF':>6}"]
    for name, r in rows:
        lines.append(f"{name:<{width}}  {r['n']:>6}  {r['bleu']:>6.2f}  {r['chrf']:>6.2f}")
    lines += [f"BLEU signature: {result['signatures']['bleu']}",
              f"chrF signature: {result['signatures']['chrf']}"]
    return "\n".join(lines)


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.split not in SPLITS:
        raise ConfigError(f"--split {args.split!r}: expected one of {', '.join(SPLITS)}")
    tuning.apply_process_tuning(inference=True)  # before torch loads (below)
    from translate.runs.rundir import RunDir
    from translate.runtime import set_threads

    set_threads(args.threads)
    model_dir = first_run(args, PROG)
    run = RunDir(model_dir)
    run.check_complete()
    cfg_path = args.config or run.config_path
    src, refs, domains = load_split(cfg_path, args.overrides, args.split, args.max_pairs)
    shortlist = None if args.shortlist is None else args.shortlist == "on"
    translator = load_translator(args, shortlist=shortlist)
    hyps = [r.text for r in translator.translate(src, beam=args.beam,
                                                 batch_size=args.batch_size)]
    result = report(hyps, refs, domains)
    result.update(run=str(model_dir), split=args.split, config=str(cfg_path),
                  checkpoint=str(translator.checkpoint_path),
                  beam=translator.options(beam=args.beam).beam_size)
    if translator.members:
        result.update(models=[str(p) for p in translator.checkpoint_paths],
                      weights=translator.model.weights, combine=translator.model.combine)
    if args.format == "json":
        print(json.dumps(result, indent=1, ensure_ascii=False))
    else:
        print(format_table(result))
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point; user errors print one line and exit with status 2."""
    run_main(lambda: _run(argv), PROG)


if __name__ == "__main__":
    main()
