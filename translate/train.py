"""``python -m translate.train --config configs/X.yaml [--set key=value ...]``.

A thin layer over :class:`translate.training.trainer.Trainer`; ``--resume RUN_DIR`` continues a run
from its own saved config (``--set`` still applies, e.g. to raise ``training.max_steps``).
A new run refuses a ``training.run_dir`` that holds an earlier one; ``--overwrite`` deletes
that run and starts over.

Config overrides may also be written as a W&B sweep agent passes its parameters:
``--training.lr=5e-4`` (the agent's ``${args}``) or ``training.lr=5e-4``
(``${args_no_hyphens}``), checked as ``--set`` is and applied after the ``--set`` ones.
``$VAR`` in ``training.run_dir`` is taken from the environment, so that a sweep's runs each
get a folder of their own (``runs/sweeps/multi30k/$WANDB_RUN_ID``).

Under torchrun (``torchrun --nproc_per_node=N -m translate.train --config ...``) each process
is one rank of a DistributedDataParallel run (:mod:`translate.training.ddp`); rank 0 writes the
run directory and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from translate import config as config_mod
from translate import tuning
from translate.cli import ArgumentParser, config_overrides, help_text, run_main, setup_logging


def build_parser() -> ArgumentParser:
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
    p.epilog = ("Overrides may also be written --KEY=VALUE or KEY=VALUE (as a W&B sweep agent "
                "passes them), e.g. --training.lr=5e-4 model.dropout=0.3.")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, with ``overrides`` holding the ``--set`` assignments and then the
    sweep-style ones (``--KEY=VALUE``, ``KEY=VALUE``) in command-line order."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    args.overrides = [*args.overrides, *config_overrides(extras, parser)]
    return args


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
        config_path = saved
        cfg = config_mod.load(saved, overrides)
    else:
        config_path = Path(args.config or config_mod.DEFAULT_CONFIG)
        cfg = config_mod.load(config_path, overrides)
    cfg.training.run_dir = config_mod.expand_environment(cfg.training.run_dir,
                                                         "training.run_dir")
    # What the command asked for, recorded in the run's summary.json.
    origin = {"argv": list(sys.argv[1:] if argv is None else argv),
              "config": str(config_mod.resolve_path(config_path).resolve()),
              "overrides": overrides}

    from translate.training.distributed import from_env  # imports torch: after the process tuning

    rank = from_env()
    if rank.world_size > 1:
        if not rank.is_main:  # rank 0 speaks for the run; the others only warn
            logging.getLogger("translate").setLevel(logging.WARNING)
        from translate.training.ddp import train  # heavy imports after the config is known good

        summary = train(cfg, rank, resume=bool(args.resume), overwrite=args.overwrite,
                        origin=origin)
        if rank.is_main:
            print(json.dumps(summary, indent=2, default=str))
        return 0

    from translate.training.trainer import Trainer  # heavy imports after the config is known good

    summary = Trainer(cfg, resume=bool(args.resume), overwrite=args.overwrite,
                      origin=origin).fit()
    print(json.dumps(summary, indent=2, default=str))
    return 0


def command() -> None:
    """The ``translate-train`` console script: ``main`` with one-line user errors."""
    run_main(main, "translate.train")


if __name__ == "__main__":
    command()
