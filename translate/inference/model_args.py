"""The model options ``infer`` and ``evaluate`` share: which runs and checkpoints to load
(one model or an ensemble), their weights and how their steps combine.

``--model A --model B``, ``--model A,B`` and ``--model A --checkpoint last,best`` (a snapshot
ensemble of one run) all load through :meth:`~translate.inference.translator.Translator.load`.
Nothing here imports torch, so ``--help`` and usage errors stay instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# translate.search.ensemble.COMBINE, spelled here so that parsing needs no torch (a test
# keeps the two equal).
COMBINE_CHOICES = ("prob", "logprob")


def _weights(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}"
                                         ) from None
    if not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """``--model`` (repeatable), ``--checkpoint``, ``--weights`` and ``--combine``."""
    p.add_argument("--model", metavar="RUN_DIR", action="append",
                   help="run directory (default: the most recent run under runs/); several "
                        "(--model A --model B, or --model A,B) decode as one ensemble")
    p.add_argument("--checkpoint", default="auto",
                   help="auto (default: averaged if kept, else best), best, last, averaged, "
                        "or a path to a .pt file; several (last,best) make an ensemble of one "
                        "run's checkpoints, or give one per --model")
    p.add_argument("--weights", metavar="W,W", type=_weights,
                   help="ensemble: one weight per model, comma-separated (default: equal)")
    p.add_argument("--combine", choices=COMBINE_CHOICES, default="logprob",
                   help="ensemble: logprob (default): the weighted mean log-probability of "
                        "each next piece, renormalised; prob: the log of the weighted mean "
                        "probability")


def first_run(args: argparse.Namespace, prog: str) -> Path:
    """The run directory of the first model ``--model`` / ``--checkpoint`` name (the most
    recent run under runs/ when ``--model`` is not given: said on stderr, and kept in
    ``args`` for :func:`load_translator`). An ensemble's scores and W&B logs go with it."""
    from translate.inference.run_loading import members
    from translate.runs.rundir import RunDir

    if not args.model:
        args.model = [str(RunDir.latest("runs"))]
        print(f"{prog.split()[-1]}: using the most recent run {args.model[0]}", file=sys.stderr)
    return Path(members(args.model, args.checkpoint)[0][0])


def load_translator(args: argparse.Namespace, **options):
    """The Translator for parsed :func:`add_model_arguments` (after :func:`first_run`) plus
    ``--device``, ``--precision`` and ``--beam``; ``options`` go to ``Translator.load``."""
    from translate.inference.translator import Translator

    models = args.model
    return Translator.load(models if len(models) > 1 else models[0], device=args.device,
                           checkpoint=args.checkpoint, precision=args.precision,
                           beam=args.beam, weights=args.weights, combine=args.combine,
                           **options)
