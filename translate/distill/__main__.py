"""``python -m translate.distill --teacher RUN_DIR [--teacher ...] --config STUDENT.yaml``.

Sequence-level knowledge distillation: the teacher (a trained run directory, or several
decoded as one ensemble) translates the config's training sources (the teacher's own when
the config names no data) with its beam search, and a student (the config's model, usually
smaller: configs/student.yaml) is trained on those translations with the teacher's tokenizer.
Decode the student greedily (its inference.beam_size). --stage translate|train runs one
stage; a killed translation continues where it stopped when the command is run again, a
killed student with --stage train --resume. The distillation keys (distill.*: the teacher's
beam, precision and device, keep_references, chunk_lines, output) are in the config.
"""

from __future__ import annotations

import argparse
import json
import logging

from translate import config as config_mod
from translate import tuning
from translate.cli import ArgumentParser, help_text, run_main, setup_logging

PROG = "python -m translate.distill"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog=PROG, description=help_text(__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, metavar="RUN_DIR", action="append",
                   help="the trained teacher's run directory; several (--teacher A --teacher "
                        "B, or A,B) teach as one ensemble")
    p.add_argument("--config", default="configs/student.yaml",
                   help="the student's YAML config (default: configs/student.yaml); one that "
                        "names no data takes the (first) teacher's data section")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set distill.keep_references=true")
    p.add_argument("--stage", choices=("all", "translate", "train"), default="all",
                   help="all (default): translate, then train; or one of them")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue the student's training from its last.pt")
    start.add_argument("--overwrite", action="store_true",
                       help="start the student over in a training.run_dir that holds an "
                            "earlier run (deleting it; the distilled corpus stays)")
    p.add_argument("--device", help="the student's training.device (auto, cpu, cuda, cuda:N); "
                                    "the teacher's is distill.device")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tuning.apply_process_tuning(inference=args.stage == "translate")  # before torch loads
    setup_logging(args.verbose)
    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"training.device={args.device}")
    from translate.distill.pipeline import run, student_overrides, teacher_dirs

    teachers = teacher_dirs(args.teacher)
    cfg = config_mod.load(args.config, student_overrides(args.config, teachers, overrides))
    from translate.runtime import set_threads
    from translate.training.distributed import from_env

    rank = from_env()
    if not rank.is_main:  # under torchrun rank 0 speaks for the run; the others only warn
        logging.getLogger("translate").setLevel(logging.WARNING)
    set_threads(cfg.training.num_threads)
    out = run(teachers, cfg, stage=args.stage, resume=args.resume, overwrite=args.overwrite,
              rank=rank)
    if rank.is_main:
        print(json.dumps(out, indent=2, default=str))
    return 0


def command() -> None:
    """The ``translate-distill`` console script: ``main`` with one-line user errors."""
    run_main(main, "translate.distill")


if __name__ == "__main__":
    command()
