"""``python -m translate.data [--config FILE] [--set k=v ...]``: prepare and summarise the corpus.

Useful before a long training run: it shows what the model will see (pairs per split and
domain, what cleaning dropped and why, each domain's share of an epoch under
``data.sampling``), warms the cache that training then reuses, and writes the prepared
corpus as plain parallel text under data/NAME/ (data.dir, data.name) with a manifest.json
saying where it came from, when, how many pairs and by which split rule.
"""

from __future__ import annotations

import argparse
import sys

from translate import config, tuning
from translate.cli import ArgumentParser, help_text, run_main
from translate.data import format_report, load_corpus
from translate.data.export import write_corpus
from translate.data.sampling import DomainSampler, is_active
from translate.data.schema import columns


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m translate.data", description=help_text(__doc__),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config; configs/NAME.yaml falls back to the "
                        "copy in the package (default: configs/default.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key, e.g. data.src_lang=de")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    args = parser.parse_args(argv)
    tuning.apply_process_tuning()  # every command runs with the same process settings
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    cfg = config.load(args.config or config.DEFAULT_CONFIG, args.overrides)
    corpus = load_corpus(cfg.data, log=log)
    write_corpus(corpus, cfg.data, log=log)
    print(format_report(corpus.report))
    if is_active(cfg.data.sampling):
        (domains,) = columns(corpus.splits["train"], "domains")
        print(DomainSampler(domains, cfg.data.sampling, cfg.training.seed).describe())
    return 0


def command() -> None:
    """The ``translate-data`` console script: ``main`` with one-line user errors."""
    run_main(main, "translate.data")


if __name__ == "__main__":
    command()
