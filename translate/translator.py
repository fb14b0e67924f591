"""Translate with a trained run directory: the Python API behind ``python -m translate.infer``.

A :class:`Translator` is loaded from a run directory alone (config.yaml, tokenizer/,
labels.json, a checkpoint with the label thresholds tuned for its weights), so "train here,
translate with that" needs no other files.

Guarantees callers can build on:

* exactly one :class:`Translation` per input string, in input order;
* empty or whitespace-only strings give an empty translation without touching the model
  (the model was never trained on empty sources and would produce a hallucinated sentence);
* a string longer than the model's limit (``tokenizer.max_tokens`` pieces, the longest
  source seen in training) is split into pieces that fit - at sentence punctuation first,
  then at whitespace, and as a last resort inside a word - translated piece by piece and
  joined with a space. Silently truncating would drop content; feeding it whole would run
  the encoder on lengths it never saw. Each such result carries a warning;
* results do not depend on the batch size or on the order of the inputs (batches are
  length-sorted by :func:`translate.decoding.decode_ids`, and search is batch-independent)
  - with the vocabulary shortlist off. A shortlist is chosen per batch (the union over its
  sentences, :mod:`translate.shortlist`), so with it on, which sentences share a batch can
  change an output or a score slightly.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from translate import config as config_mod
from translate.attention_view import AttentionView, attach_attention
from translate.checkpoint import CheckpointError, load_checkpoint
from translate.config import Config, ConfigError, InferenceConfig
from translate.decoding import decode_ids
from translate.model import build_model
from translate.rundir import RunDir
from translate.runtime import resolve_device, resolve_precision
from translate.shortlist import LexicalTable, Shortlist
from translate.tokenizer import Tokenizer, TokenizerError

__all__ = ["Translation", "Translator", "TranslatorError", "split_long"]

log = logging.getLogger(__name__)

CHECKPOINT_ALIASES = {"best": "best_path", "last": "last_path", "averaged": "averaged_path"}

# Source pieces per batch, at most ``batch_size`` times this. Batches of ordinary sentences
# (up to this many pieces) fill up to ``batch_size``; a batch of longer ones holds fewer
# sentences. Search keeps every sentence's encoder states and attention keys (about 4 KB per
# source piece for the default model sizes, shared by its beams), so this bounds peak memory
# by the batch size alone, whatever the input holds, without slowing ordinary batches down.
PIECES_PER_SENTENCE = 20

# A sentence ends at . ! ? ; : or an ellipsis (optionally followed by closing quotes or
# brackets), and the next one starts after whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?;:…])[\"'»«”“)\]]*\s+")


class TranslatorError(CheckpointError):
    """A run directory or checkpoint that cannot be used for translation (one-line message)."""


@dataclass
class Translation:
    """The result for one input string.

    ``score`` is the length-normalised log-probability of the best hypothesis (None for an
    empty input, which is not sent through the model). ``nbest`` lists ``(text, score)``
    best first. ``domains`` holds the labels whose probability reaches the per-label
    threshold tuned on validation; ``domain_probs`` holds every label's probability.
    ``warnings`` says when the input had to be split into pieces. ``scores_over`` says what
    the scores are log-probabilities over: ``vocabulary`` or the batch's ``shortlist``.
    ``attention`` / ``nbest_attention`` (parallel to ``nbest``): only with
    ``translate(..., attention=True)`` (:class:`~translate.attention_view.AttentionView`).
    """

    text: str
    score: float | None
    nbest: list[tuple[str, float]] = field(default_factory=list)
    domains: dict[str, float] = field(default_factory=dict)
    domain_probs: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    scores_over: str = "vocabulary"
    attention: AttentionView | None = None
    nbest_attention: list[AttentionView] = field(default_factory=list)


# --------------------------------------------------------------------------- long inputs


def _pack(units: list[list[int]], limit: int) -> list[list[int]]:
    """Greedily concatenate consecutive id lists into chunks of at most ``limit`` ids."""
    chunks: list[list[int]] = []
    current: list[int] = []
    for ids in units:
        if current and len(current) + len(ids) > limit:
            chunks.append(current)
            current = []
        current = current + ids
    if current:
        chunks.append(current)
    return chunks


def split_long(text: str, encode: Callable[[list[str]], list[list[int]]],
               limit: int) -> list[list[int]]:
    """Split ``text`` into id sequences of at most ``limit`` pieces each.

    Sentences are kept whole where they fit, then words, and a single word longer than the
    limit is cut between pieces. Each unit is encoded on its own: with sentencepiece's dummy
    prefix, a unit encodes as it would after a space, so concatenated units reproduce the
    pieces of the joined text.
    """
    units: list[list[int]] = []
    for sentence in (s for s in _SENTENCE_END.split(text) if s.strip()):
        (ids,) = encode([sentence])
        if len(ids) <= limit:
            units.append(ids)
            continue
        words: list[list[int]] = []
        for word_ids in encode(sentence.split()):
            if len(word_ids) <= limit:
                words.append(word_ids)
            else:
                words.extend(word_ids[i:i + limit] for i in range(0, len(word_ids), limit))
        units.extend(_pack(words, limit))
    return _pack(units, limit)


# --------------------------------------------------------------------------- translator


def _resolve_checkpoint(run: RunDir, checkpoint: str | Path) -> Path:
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


def _labels(run: RunDir, cfg: Config) -> list[str]:
    """The run's label vocabulary (the tagger's outputs, in order); none without a tagger."""
    if not cfg.model.tagger.enabled:
        return []
    labels = run.read_labels()
    if labels is None:
        raise TranslatorError(f"{run.labels_path}: missing; {run.config_path} enables the "
                              "domain tagger, whose outputs it names")
    return labels


def _thresholds(run: RunDir, path: Path, state: dict, labels: list[str]) -> list[float]:
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


def _read_lexicon(run: RunDir, tokenizer: Tokenizer, wanted: bool) -> LexicalTable | None:
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


def _quantize(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the LSTMs and linear layers (CPU inference)."""
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not installed.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            model, {nn.LSTM, nn.Linear}, dtype=torch.qint8
        )


def _precision(name: str, device: torch.device, quantize: bool) -> torch.dtype:
    """The autocast dtype; with int8 weights ``auto`` is fp32 and bf16/fp16 are refused.

    Dynamic int8 layers quantize fp32 activations on the fly and have no bf16 kernels;
    autocast would hand them bf16 activations from the unquantized products (attention).
    """
    if not quantize:
        return resolve_precision(name, device)
    if name in ("bf16", "fp16"):
        raise ConfigError(f"precision {name!r} cannot be combined with quantize (int8 weights "
                          "run with fp32 activations); drop one of them")
    return torch.float32


class Translator:
    """A loaded model with its tokenizer, labels and inference defaults."""

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, cfg: Config, labels: list[str],
                 thresholds: list[float], device: torch.device,
                 dtype: torch.dtype = torch.float32, checkpoint_path: Path | None = None,
                 quantized: bool = False, lexicon: LexicalTable | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = cfg
        self.labels = labels
        self.thresholds = thresholds
        self.device = device
        self.dtype = dtype
        self.checkpoint_path = checkpoint_path
        self.quantized = quantized
        self.max_tokens = cfg.tokenizer.max_tokens
        self.special = {"bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id,
                        "pad_id": tokenizer.pad_id}
        self.lexicon = lexicon  # the shortlist's table; None: always the whole vocabulary
        self._shortlists: dict[tuple[int, int], Shortlist] = {}

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", checkpoint: str | Path = "auto",
             quantize: bool | None = None, precision: str = "fp32",
             shortlist: bool | None = None) -> Translator:
        """Load ``run_dir`` for inference.

        ``checkpoint``: ``auto`` (averaged if the run kept one, else best, else last),
        ``best``, ``last``, ``averaged`` or a path (absolute, or relative to the working
        directory or the run directory). ``quantize``: dynamic int8 weights for the LSTMs
        and linear layers, CPU only; None takes the run's ``inference.quantize`` (the
        process-wide malloc setting that speeds int8 search up is the caller's:
        :func:`translate.tuning.retain_freed_memory`).
        ``precision``: ``fp32`` (default, identical results on every device), ``bf16``
        autocast (CUDA or CPU; search scores stay fp32), ``fp16`` (CUDA) or ``auto`` (see
        :func:`translate.runtime.choose_precision`).
        ``shortlist``: decode over per-batch vocabulary shortlists (None: the run's
        ``inference.shortlist``, on by default); a run without ``shortlist.pt`` decodes over
        the whole vocabulary (logged).
        """
        run = RunDir(run_dir)
        run.check_complete()
        cfg = config_mod.load(run.config_path)
        try:
            tokenizer = Tokenizer.load(run.tokenizer_dir)
        except TokenizerError as err:
            raise TranslatorError(str(err)) from None
        labels = _labels(run, cfg)
        if quantize is None:
            quantize = cfg.inference.quantize
        if shortlist is not None:
            cfg.inference.shortlist = shortlist
        lexicon = (_read_lexicon(run, tokenizer, shortlist is True) if cfg.inference.shortlist
                   else None)
        torch_device = resolve_device(device)
        if quantize and torch_device.type != "cpu":
            raise ConfigError(
                f"quantize: dynamic int8 quantization runs on the CPU only, not on "
                f"{str(torch_device)!r}; use --device cpu, or --no-quantize when the run's "
                "inference.quantize asks for it"
            )
        dtype = _precision(precision, torch_device, quantize)
        path = _resolve_checkpoint(run, checkpoint)
        state = load_checkpoint(path, map_location="cpu")
        if not isinstance(state.get("model"), dict):
            raise TranslatorError(f"{path}: no model weights in this checkpoint")
        thresholds = _thresholds(run, path, state, labels)
        model = build_model(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size,
                            tokenizer.pad_id, len(labels))
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:
            detail = " ".join(str(err).split())[:300]
            raise TranslatorError(
                f"{path}: weights do not fit the model described by {run.config_path} and "
                f"{run.tokenizer_dir} (was the run directory mixed up?): {detail}"
            ) from None
        model.eval()
        if quantize:
            model = _quantize(model)
        model.to(torch_device)
        return cls(model, tokenizer, cfg, labels, thresholds, torch_device, dtype, path,
                   quantize, lexicon)

    # ------------------------------------------------------------------ options

    def options(self, **overrides) -> InferenceConfig:
        """The run's inference defaults with the given non-None overrides, checked."""
        aliases = {"beam": "beam_size"}
        changes = {aliases.get(k, k): v for k, v in overrides.items() if v is not None}
        opts = dataclasses.replace(self.config.inference, **changes)
        return config_mod.validate_inference(opts, prefix="")

    def _shortlist(self, opts: InferenceConfig) -> Shortlist | None:
        """The shortlist ``opts`` ask for (cached per size), None for the whole vocabulary."""
        if not opts.shortlist or self.lexicon is None:
            return None
        key = (opts.shortlist_k, opts.shortlist_frequent)
        if key not in self._shortlists:
            tok = self.tokenizer
            self._shortlists[key] = Shortlist(self.lexicon, *key, special=(
                tok.bos_id, tok.eos_id, tok.unk_id, tok.pad_id))
        return self._shortlists[key]

    # ------------------------------------------------------------------ translate

    def translate(self, texts: Sequence[str], beam: int | None = None,
                  alpha: float | None = None, n_best: int | None = None,
                  max_len_a: float | None = None, max_len_b: int | None = None,
                  min_len: int | None = None, no_repeat_ngram: int | None = None,
                  batch_size: int | None = None, workers: int | None = None,
                  on_warning: Callable[[int, str], None] | None = None,
                  shortlist: bool | None = None, attention: bool = False) -> list[Translation]:
        """Translate ``texts``; options default to the run's ``inference`` config.

        ``shortlist``: True/False turns the vocabulary shortlist on/off for this call (on
        needs a run with ``shortlist.pt``; without one, the whole vocabulary is used).
        ``attention``: fill each result's ``attention`` (output x source pieces).

        ``on_warning(index, message)`` is called (besides ``Translation.warnings``) for each
        input that had to be split, with its 0-based index in ``texts``.
        """
        if isinstance(texts, str):
            raise TypeError("translate() takes a list of strings, not a single string")
        opts = self.options(beam=beam, alpha=alpha, n_best=n_best, max_len_a=max_len_a,
                            max_len_b=max_len_b, min_len=min_len,
                            no_repeat_ngram=no_repeat_ngram, batch_size=batch_size,
                            workers=workers, shortlist=shortlist)
        restrict = self._shortlist(opts)
        over = "vocabulary" if restrict is None else "shortlist"
        results = [Translation(text="", score=None, scores_over=over) for _ in texts]
        todo = [i for i, t in enumerate(texts) if t.strip()]
        encoded = self.tokenizer.encode_src([texts[i].strip() for i in todo])
        segments: list[list[int]] = []  # model inputs
        owners: list[tuple[int, int]] = []  # (text index, number of segments)
        for i, ids in zip(todo, encoded, strict=True):
            if not ids:
                continue
            if len(ids) <= self.max_tokens:
                parts = [ids]
            else:
                parts = split_long(texts[i].strip(), self.tokenizer.encode_src, self.max_tokens)
                msg = (f"input of {len(ids)} pieces exceeds the model's limit of "
                       f"{self.max_tokens} (tokenizer.max_tokens); translated in "
                       f"{len(parts)} parts split at sentence/word boundaries")
                results[i].warnings.append(msg)
                if on_warning is not None:
                    on_warning(i, msg)
            segments.extend(parts)
            owners.append((i, len(parts)))
        if not segments:
            return results
        with torch.inference_mode():
            decoded = decode_ids(self.model, segments, opts, special=self.special,
                                 device=self.device, dtype=self.dtype,
                                 max_tokens=opts.batch_size * PIECES_PER_SENTENCE,
                                 shortlist=restrict, attention=attention)
        flat = [h for hyps in decoded.hypotheses for h in hyps]
        texts_out = iter(self.tokenizer.decode_tgt([h.tokens for h in flat]))
        nbests = [[(next(texts_out), float(h.score)) for h in hyps]
                  for hyps in decoded.hypotheses]
        probs = decoded.domain_probs
        start = 0
        for i, count in owners:
            parts = [sorted(nb, key=lambda x: -x[1])[:opts.n_best] for nb in
                     nbests[start:start + count]]
            res = results[i]
            if count == 1:
                res.nbest = parts[0]
            else:  # pieces: one joined hypothesis, scored by the mean of the pieces' scores
                res.nbest = [(" ".join(p[0][0] for p in parts if p),
                              sum(p[0][1] for p in parts if p) / count)]
            if res.nbest:
                res.text, res.score = res.nbest[0]
            if probs is not None:
                row = probs[start:start + count].mean(dim=0).tolist()
                res.domain_probs = dict(zip(self.labels, row, strict=True))
                res.domains = {label: p for label, p, th in
                               zip(self.labels, row, self.thresholds, strict=True) if p >= th}
            start += count
        if attention:
            attach_attention(results, owners, decoded.hypotheses, segments, self.tokenizer,
                             opts.n_best)
        return results
