"""``python -m translate.train --config configs/X.yaml [--set key=value ...]``.

A thin layer over :class:`translate.training.trainer.Trainer`; ``--resume RUN_DIR`` continues a run
from its own saved config (``--set`` still applies, e.g. to raise ``training.max_steps``).
A new run refuses a ``training.run_dir`` that holds an earlier one; ``--overwrite`` deletes
that run and starts over.

Under torchrun (``torchrun --nproc_per_node=N -m translate.train --config ...``) each process
is one rank of a DistributedDataParallel run (:mod:`translate.training.ddp`); rank 0 writes the
run directory and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from translate import config as config_mod
from translate import tuning
from translate.cli import ArgumentParser, help_text, run_main, setup_logging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m translate.train", description=help_text(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config; configs/NAME.yaml falls back to the copy in the "
                        "package "
                        "(default: configs/default.yaml)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    start.add_argument("--overwrite", action="store_true",
                       help="start a new run in a training.run_dir that holds an earlier one, "
                            "deleting its checkpoints, logs and tokenizer first (offline W&B "
                            "runs under wandb/ stay); without it such a folder is refused")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set training.lr=5e-4 (repeatable)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N: shortcut for "
                   "--set training.device=...")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tuning.apply_process_tuning()  # before torch is imported (by the trainer, below)
    setup_logging(args.verbose)
    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"training.device={args.device}")
    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file() or not (run_dir / "last.pt").is_file():
            raise config_mod.ConfigError(f"{run_dir}: not a run directory to resume "
                                         "(needs config.yaml and last.pt)")
        overrides.append(f"training.run_dir={run_dir}")
        cfg = config_mod.load(saved, overrides)
    else:
        cfg = config_mod.load(args.config or config_mod.DEFAULT_CONFIG, overrides)

    from translate.training.distributed import from_env  # imports torch: after the process tuning

    rank = from_env()
    if rank.world_size > 1:
        if not rank.is_main:  # rank 0 speaks for the run; the others only warn
            logging.getLogger("translate").setLevel(logging.WARNING)
        from translate.training.ddp import train  # heavy imports after the config is known good

        summary = train(cfg, rank, resume=bool(args.resume), overwrite=args.overwrite)
        if rank.is_main:
            print(json.dumps(summary, indent=2, default=str))
        return 0

    from translate.training.trainer import Trainer  # heavy imports after the config is known good

    summary = Trainer(cfg, resume=bool(args.resume), overwrite=args.overwrite).fit()
    print(json.dumps(summary, indent=2, default=str))
    return 0


def command() -> None:
    """The ``translate-train`` console script: ``main`` with one-line user errors."""
    run_main(main, "translate.train")


if __name__ == "__main__":
    command()
