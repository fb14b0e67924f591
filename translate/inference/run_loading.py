"""What :meth:`translate.inference.translator.Translator.load` reads from a run directory, checked.

The models a ``--model`` / ``--checkpoint`` pair names (one, or the members of an
ensemble), the checkpoint a name stands for, the label vocabulary and the thresholds tuned
for those weights, the shortlist table, and the precision the weights can run in: each is
one function with one one-line error, so that loading reads as a list of steps and every way
a run directory can be unusable is named in one place.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from translate.config import Config, ConfigError
from translate.data.tokenizer import Tokenizer
from translate.runs.checkpoint import CheckpointError
from translate.runs.rundir import RunDir
from translate.runtime import decoding_job, resolve_precision
from translate.search.shortlist import LexicalTable

log = logging.getLogger("translate.inference.translator")

CHECKPOINT_ALIASES = {"best": "best_path", "last": "last_path", "averaged": "averaged_path"}


class TranslatorError(CheckpointError):
    """A run directory or checkpoint that cannot be used for translation (one-line message)."""


def _names(value: str | Path | Sequence[str | Path], exists) -> list[str]:
    """``value`` as a list of names: a sequence item by item, a comma-separated string split
    at its commas - unless ``exists(name)`` says the whole string names something that is
    there (a folder or file whose name holds a comma)."""
    items = [value] if isinstance(value, (str, Path)) else list(value)
    out: list[str] = []
    for item in items:
        text = str(item)
        out.extend([text] if exists(text) else [p.strip() for p in text.split(",")])
    if not out or any(not name for name in out):
        raise TranslatorError(f"{value!r}: an empty name in the list of models or checkpoints")
    return out


def members(models: str | Path | Sequence[str | Path],
            checkpoints: str | Path | Sequence[str | Path] = "auto") -> list[tuple[str, str]]:
    """The (run directory, checkpoint) of every model that ``models`` and ``checkpoints``
    name: several runs with one checkpoint name each take that checkpoint, one run with
    several checkpoints gives one model per checkpoint (a snapshot ensemble), and equally
    many of both pair up in order. ``"A,B"`` is the same as ``["A", "B"]``."""
    runs = _names(models, lambda n: Path(n).is_dir())
    ckpts = _names(checkpoints, lambda n: Path(n).is_file())
    if len(ckpts) == 1:
        return [(run, ckpts[0]) for run in runs]
    if len(runs) == 1:
        return [(runs[0], ckpt) for ckpt in ckpts]
    if len(runs) == len(ckpts):
        return list(zip(runs, ckpts, strict=True))
    raise TranslatorError(f"{len(ckpts)} checkpoints ({', '.join(ckpts)}) for {len(runs)} "
                          "models: give one checkpoint for all, one per model, or several "
                          "for a single model")


def checkpoint_path(run: RunDir, checkpoint: str | Path) -> Path:
    name = str(checkpoint)
    if name == "auto":  # averaged.pt exists only when it validated better than best.pt
        return run.default_checkpoint()
    if name in CHECKPOINT_ALIASES:
        path = getattr(run, CHECKPOINT_ALIASES[name])
        if not path.is_file():
            have = [p.stem for p in run.checkpoints()]
            hint = f"; available: {', '.join(have)}" if have else ""
            raise TranslatorError(f"{run.root}: no {path.name} checkpoint{hint}")
        return path
    path = Path(checkpoint)
    if not path.is_file() and (run.root / path).is_file():
        path = run.root / path
    if not path.is_file():
        raise TranslatorError(
            f"{path}: checkpoint not found (use best, last, averaged or a path to a .pt file)"
        )
    return path


def run_labels(run: RunDir, cfg: Config) -> list[str]:
    """The run's label vocabulary (the tagger's outputs, in order); none without a tagger."""
    if not cfg.model.tagger.enabled:
        return []
    labels = run.read_labels()
    if labels is None:
        raise TranslatorError(f"{run.labels_path}: missing; {run.config_path} enables the "
                              "domain tagger, whose outputs it names")
    return labels


def label_thresholds(run: RunDir, path: Path, state: dict, labels: list[str]) -> list[float]:
    """The per-label thresholds tuned for these weights (saved with them); 0.5 where none
    were tuned (a run without validation data, or a checkpoint saved before the first
    validation). A checkpoint of an older run without its own uses the run's copy."""
    if not labels:
        return []
    where = path
    thresholds = [float(t) for t in state.get("thresholds") or []]
    if not thresholds:
        where, thresholds = run.labels_path, run.legacy_thresholds() or [0.5] * len(labels)
    if len(thresholds) != len(labels):
        raise TranslatorError(f"{where}: {len(thresholds)} label thresholds, but the run has "
                              f"{len(labels)} labels")
    return thresholds


def read_lexicon(run: RunDir, tokenizer: Tokenizer, wanted: bool) -> LexicalTable | None:
    """The run's shortlist table, or None (logged) for a run trained without one."""
    state = run.read_shortlist()
    if state is None:
        (log.warning if wanted else log.info)(
            "%s: no %s (trained before shortlists existed); decoding over the whole "
            "vocabulary", run.root, run.shortlist_path.name)
        return None
    try:
        return LexicalTable.from_state(state, tokenizer.src_vocab_size,
                                       tokenizer.tgt_vocab_size)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise TranslatorError(f"{run.shortlist_path}: unusable shortlist: {err}") from None


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the LSTMs and linear layers (CPU inference)."""
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not installed.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            model, {nn.LSTM, nn.Linear}, dtype=torch.qint8
        )


def inference_precision(name: str, device: torch.device, quantize: bool,
                        beam: int) -> torch.dtype:
    """The autocast dtype; with int8 weights ``auto`` is fp32 and bf16/fp16 are refused.
    ``auto`` otherwise depends on the search: bf16 is faster for beam search than for
    greedy decoding on some CPUs (:data:`translate.runtime.CPU_AUTO_BF16`).

    Dynamic int8 layers quantize fp32 activations on the fly and have no bf16 kernels;
    autocast would hand them bf16 activations from the unquantized products (attention).
    """
    if not quantize:
        return resolve_precision(name, device, decoding_job(beam))
    if name in ("bf16", "fp16"):
        raise ConfigError(f"precision {name!r} cannot be combined with quantize (int8 weights "
                          "run with fp32 activations); drop one of them")
    return torch.float32
