"""Add a vocabulary shortlist to a run directory trained before shortlists existed.

Training writes ``shortlist.pt`` at its end; older runs decode over the whole vocabulary
until they get one. This reads the run's own config and tokenizer, encodes its training data
exactly as the trainer did (``translate.training.prepare``), builds the Dice table
(:func:`translate.search.shortlist.build_lexical_table`) and writes it atomically.

    python scripts/build_shortlist.py --model RUN_DIR

It imports the installed ``translate`` (``pip install -e .`` in this checkout, or a wheel).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from translate import config as config_mod
from translate.cli import run_main
from translate.runs.rundir import RunDir
from translate.search.shortlist import build_lexical_table
from translate.training.prepare import prepare

PROG = "scripts/build_shortlist.py"


def build(run_dir: str) -> int:
    run = RunDir(run_dir)
    run.check_complete()
    cfg = config_mod.load(run.config_path)
    data = prepare(cfg, run, log=logging.getLogger("translate.data").info)
    train, tok = data.splits["train"], data.tokenizer
    start = time.perf_counter()
    table = build_lexical_table(train.src_ids, train.tgt_ids, tok.src_vocab_size,
                                tok.tgt_vocab_size)
    run.write_shortlist(table.state())
    print(f"{PROG}: Dice table over {len(train)} training pairs in "
          f"{time.perf_counter() - start:.1f} s -> {run.shortlist_path} "
          f"({run.shortlist_path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="run directory")
    args = p.parse_args()
    run_main(lambda: build(args.model), PROG)


if __name__ == "__main__":
    main()
