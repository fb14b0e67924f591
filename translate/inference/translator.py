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
* several models (``Translator.load(["runs/a", "runs/b"])``, ``"runs/a,runs/b"``, or one
  run's checkpoints: ``checkpoint="last,best"``) decode as one ensemble
  (:mod:`translate.search.ensemble`) with the same results, fields and guarantees as one model;
* results do not depend on the batch size or on the order of the inputs (batches are
  length-sorted by :func:`translate.search.decoding.decode_ids`, and search is batch-independent)
  - with the vocabulary shortlist off. A shortlist is chosen per batch (the union over its
  sentences, :mod:`translate.search.shortlist`), so with it on, which sentences share a batch can
  change an output or a score slightly.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from translate import config as config_mod
from translate.config import Config, ConfigError, InferenceConfig
from translate.data.batching import source_split
from translate.data.tokenizer import Tokenizer, TokenizerError
from translate.inference.run_loading import (
    TranslatorError,
    checkpoint_path,
    inference_precision,
    label_thresholds,
    members,
    quantize_int8,
    read_lexicon,
    run_labels,
)
from translate.inference.segments import split_long
from translate.model import build_model
from translate.runs.checkpoint import load_checkpoint
from translate.runs.rundir import RunDir
from translate.runtime import resolve_device
from translate.search.attention_view import AttentionView, attach_attention
from translate.search.beam import Hypothesis
from translate.search.decoding import decode_ids, inference_batches
from translate.search.domain_choice import choose
from translate.search.ensemble import Combine, Ensemble, EnsembleShortlist, normalised_weights
from translate.search.shortlist import LexicalTable, Shortlist

__all__ = ["Translation", "Translator", "TranslatorError", "split_long"]

log = logging.getLogger(__name__)

# Source pieces per batch, at most ``batch_size`` times this. Batches of ordinary sentences
# (up to this many pieces) fill up to ``batch_size``; a batch of longer ones holds fewer
# sentences. Search keeps every sentence's encoder states and attention keys (about 4 KB per
# source piece for the default model sizes, shared by its beams), so this bounds peak memory
# by the batch size alone, whatever the input holds, without slowing ordinary batches down.
PIECES_PER_SENTENCE = 20

@dataclass
class Translation:
    """The result for one input string.

    ``score`` is the length-normalised log-probability of the best hypothesis (None for an
    empty input, which is not sent through the model). ``nbest`` lists ``(text, score)``
    best first. ``domains`` holds the labels whose probability reaches the per-label
    threshold tuned on validation; ``domain_probs`` holds every label's probability.
    ``warnings`` says when the input had to be split into pieces. ``scores_over`` says what
    the scores are log-probabilities over: ``vocabulary`` or the batch's ``shortlist``.
    A domain-conditioned model also says how it was conditioned: ``conditioned_by``
    (``predicted``, ``forced`` or ``none``; None for a model without conditioning) and
    ``conditioning``, each label with a non-zero weight in the mixture (an input split into
    pieces: the mean over its pieces).
    ``attention`` / ``nbest_attention`` (parallel to ``nbest``): only with
    ``translate(..., attention=True)`` (:class:`~translate.search.attention_view.AttentionView`).
    """

    text: str
    score: float | None
    nbest: list[tuple[str, float]] = field(default_factory=list)
    domains: dict[str, float] = field(default_factory=dict)
    domain_probs: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    scores_over: str = "vocabulary"
    conditioned_by: str | None = None
    conditioning: dict[str, float] = field(default_factory=dict)
    attention: AttentionView | None = None
    nbest_attention: list[AttentionView] = field(default_factory=list)


def _check_same_tokenizer(a: Translator, b: Translator) -> None:
    """Refuse, in one line naming both files, two models whose tokenizers differ."""
    differ = a.tokenizer.differs_from(b.tokenizer)
    if differ is None:
        return
    raise TranslatorError(f"{differ[0]} and {differ[1]}: different sentencepiece models; "
                          "the models of an ensemble share one tokenizer (train them on the "
                          "same data with the same tokenizer settings, or set tokenizer.reuse)")


# --------------------------------------------------------------------------- translator


class Translator:
    """A loaded model (or ensemble) with its tokenizer, labels and inference defaults.

    An ensemble's ``members`` are the loaded single models it combines; its inference
    defaults are the first member's, ``checkpoint_paths`` lists every member's weights.
    """

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, cfg: Config, labels: list[str],
                 thresholds: list[float], device: torch.device,
                 dtype: torch.dtype = torch.float32, checkpoint_path: Path | None = None,
                 quantized: bool = False, lexicon: LexicalTable | None = None,
                 members: Sequence[Translator] = ()) -> None:
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
        self.members = list(members)
        self.checkpoint_paths = ([p for m in self.members for p in m.checkpoint_paths]
                                 if self.members else [checkpoint_path])
        self._shortlists: dict[tuple[int, int], Shortlist | EnsembleShortlist | None] = {}

    @classmethod
    def load(cls, run_dir: str | Path | Sequence[str | Path], device: str = "auto",
             checkpoint: str | Path | Sequence[str | Path] = "auto",
             quantize: bool | None = None, precision: str = "fp32",
             shortlist: bool | None = None, beam: int | None = None,
             weights: Sequence[float] | None = None, combine: Combine = "logprob") -> Translator:
        """Load ``run_dir`` for inference; several run directories (a list, or one string
        ``"A,B"``) or several checkpoints (``"last,best"``) load as an ensemble
        (:meth:`ensemble`, :func:`translate.inference.run_loading.members`), every member
        with the options below, ``quantize`` None taking the first run's setting.
        ``weights``: one per member (default: equal); ``combine``: ``logprob`` (the
        renormalised weighted mean log probability) or ``prob`` (the log of the weighted
        mean probability), as :mod:`translate.search.ensemble` explains.

        ``checkpoint``: ``auto`` (averaged if the run kept one, else best, else last),
        ``best``, ``last``, ``averaged`` or a path (absolute, or relative to the working
        directory or the run directory). ``quantize``: dynamic int8 weights for the LSTMs
        and linear layers, CPU only; None takes the run's ``inference.quantize`` (the
        process-wide malloc setting that speeds int8 search up is the caller's:
        :func:`translate.tuning.retain_freed_memory`).
        ``precision``: ``fp32`` (default, identical results on every device), ``bf16``
        autocast (CUDA or CPU; search scores stay fp32), ``fp16`` (CUDA) or ``auto`` (see
        :func:`translate.runtime.choose_precision`: on some CPUs bf16 pays for beam search
        but not for greedy decoding, so ``auto`` looks at ``beam``, the beam size the caller
        will mostly decode with; None: the run's ``inference.beam_size``).
        ``shortlist``: decode over per-batch vocabulary shortlists (None: the run's
        ``inference.shortlist``, on by default); a run without ``shortlist.pt`` decodes over
        the whole vocabulary (logged).
        """
        specs = members(run_dir, checkpoint)
        if len(specs) == 1 and weights is None:
            return cls._load_one(*specs[0], device, quantize, precision, shortlist, beam)
        first = RunDir(specs[0][0])  # its inference settings stand for every member's
        first.check_complete()
        defaults = config_mod.load(first.config_path).inference
        quantize = defaults.quantize if quantize is None else quantize
        beam = defaults.beam_size if beam is None else beam  # one precision for all
        return cls.ensemble([cls._load_one(run, ckpt, device, quantize, precision, shortlist,
                                           beam) for run, ckpt in specs], weights, combine)

    @classmethod
    def _load_one(cls, run_dir: str | Path, checkpoint: str | Path, device: str,
                  quantize: bool | None, precision: str, shortlist: bool | None,
                  beam: int | None) -> Translator:
        """One run directory's model, as :meth:`load` describes."""
        run = RunDir(run_dir)
        run.check_complete()
        cfg = config_mod.load(run.config_path)
        try:
            tokenizer = Tokenizer.load(run.tokenizer_dir)
        except TokenizerError as err:
            raise TranslatorError(str(err)) from None
        labels = run_labels(run, cfg)
        if quantize is None:
            quantize = cfg.inference.quantize
        if shortlist is not None:
            cfg.inference.shortlist = shortlist
        lexicon = (read_lexicon(run, tokenizer, shortlist is True) if cfg.inference.shortlist
                   else None)
        torch_device = resolve_device(device)
        if quantize and torch_device.type != "cpu":
            raise ConfigError(
                f"quantize: dynamic int8 quantization runs on the CPU only, not on "
                f"{str(torch_device)!r}; use --device cpu, or --no-quantize when the run's "
                "inference.quantize asks for it"
            )
        dtype = inference_precision(precision, torch_device, quantize,
                                    beam if beam is not None else cfg.inference.beam_size)
        path = checkpoint_path(run, checkpoint)
        state = load_checkpoint(path, map_location="cpu")
        if not isinstance(state.get("model"), dict):
            raise TranslatorError(f"{path}: no model weights in this checkpoint")
        thresholds = label_thresholds(run, path, state, labels)
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
            model = quantize_int8(model)
        model.to(torch_device)
        return cls(model, tokenizer, cfg, labels, thresholds, torch_device, dtype, path,
                   quantize, lexicon)

    @classmethod
    def ensemble(cls, members: Sequence[Translator], weights: Sequence[float] | None = None,
                 combine: Combine = "logprob") -> Translator:
        """Loaded models decoded as one (:class:`~translate.search.ensemble.Ensemble`).

        They must share one tokenizer (the same pieces, scores and normalisation: two runs
        of one config on the same data have it, whatever their seeds) and, where they tag
        domains, one label list; a member without a tagger or conditioning simply takes no
        part in them. The label thresholds are the weighted mean of the tagging members';
        the inference defaults are the first member's; the input length limit is the
        smallest member's; the shortlist of a batch is the union of the members'.
        """
        first = members[0]
        try:
            shares = normalised_weights(weights, len(members))
        except ValueError as err:
            raise ConfigError(f"--weights: {err}") from None
        for other in members[1:]:
            _check_same_tokenizer(first, other)
            if other.device != first.device or other.dtype != first.dtype:
                raise ConfigError(f"{other.checkpoint_path}: loaded on {other.device} in "
                                  f"{other.dtype}, {first.checkpoint_path} on {first.device} "
                                  f"in {first.dtype}; load every member alike")
        tagging = [(m, w) for m, w in zip(members, shares, strict=True) if m.labels]
        labels = tagging[0][0].labels if tagging else []
        for m, _ in tagging[1:]:
            if m.labels != labels:
                raise TranslatorError(
                    f"{m.checkpoint_path}: domain labels {m.labels} differ from "
                    f"{tagging[0][0].checkpoint_path}'s {labels}; an ensemble's members tag "
                    "the same labels")
        total = sum(w for _, w in tagging)
        thresholds = [sum(w * m.thresholds[j] for m, w in tagging) / total
                      for j in range(len(labels))]
        model = Ensemble([m.model for m in members], shares, combine)
        out = cls(model, first.tokenizer, first.config, labels, thresholds, first.device,
                  first.dtype, first.checkpoint_path, any(m.quantized for m in members),
                  None, members)
        out.max_tokens = min(m.max_tokens for m in members)
        if out.config.inference.shortlist and any(m.lexicon is None for m in members):
            log.info("ensemble: a member decodes over the whole vocabulary, so the ensemble "
                     "does too (the union of the members' shortlists)")
        return out

    # ------------------------------------------------------------------ options

    def options(self, **overrides) -> InferenceConfig:
        """The run's inference defaults with the given non-None overrides, checked."""
        aliases = {"beam": "beam_size"}
        changes = {aliases.get(k, k): v for k, v in overrides.items() if v is not None}
        opts = dataclasses.replace(self.config.inference, **changes)
        return config_mod.validate_inference(opts, prefix="")

    def _shortlist(self, opts: InferenceConfig) -> Shortlist | EnsembleShortlist | None:
        """The shortlist ``opts`` ask for (cached per size), None for the whole vocabulary;
        an ensemble's: the union of its members' (None when one has none)."""
        if self.members:
            if not opts.shortlist:
                return None
            parts = [m._shortlist(opts) for m in self.members]
            return None if any(p is None for p in parts) else EnsembleShortlist(parts)
        if not opts.shortlist or self.lexicon is None:
            return None
        key = (opts.shortlist_k, opts.shortlist_frequent)
        if key not in self._shortlists:
            tok = self.tokenizer
            self._shortlists[key] = Shortlist(self.lexicon, *key, special=(
                tok.bos_id, tok.eos_id, tok.unk_id, tok.pad_id))
        return self._shortlists[key]

    def shortlist_sizes(self, texts: Sequence[str], batch_size: int | None = None,
                        shortlist: bool | None = None) -> list[int]:
        """How many target pieces the shortlist holds for each batch that
        ``translate(texts, batch_size=..., shortlist=...)`` decodes, in decoding order; empty
        when it decodes over the whole vocabulary. For benchmarks and for tuning the run's
        ``shortlist_k`` / ``shortlist_frequent``: nothing is decoded."""
        opts = self.options(batch_size=batch_size, shortlist=shortlist)
        restrict = self._shortlist(opts)
        if restrict is None:
            return []
        segments, _ = self._segments(texts, lambda i, msg: None)
        if not segments:
            return []
        batches = inference_batches(source_split(segments), opts.batch_size,
                                    opts.batch_size * PIECES_PER_SENTENCE)
        return [restrict.select([segments[i] for i in rows]).numel() for rows in batches]

    def _segments(self, texts: Sequence[str], warn: Callable[[int, str], None]
                  ) -> tuple[list[list[int]], list[tuple[int, int]]]:
        """The model inputs for ``texts``, and per non-empty text (its index, how many
        inputs it became); ``warn(index, message)`` for each text split to fit the model."""
        todo = [i for i, t in enumerate(texts) if t.strip()]
        encoded = self.tokenizer.encode_src([texts[i].strip() for i in todo])
        segments: list[list[int]] = []
        owners: list[tuple[int, int]] = []
        for i, ids in zip(todo, encoded, strict=True):
            if not ids:
                continue
            if len(ids) <= self.max_tokens:
                parts = [ids]
            else:
                parts = split_long(texts[i].strip(), self.tokenizer.encode_src, self.max_tokens)
                warn(i, f"input of {len(ids)} pieces exceeds the model's limit of "
                        f"{self.max_tokens} (tokenizer.max_tokens); translated in "
                        f"{len(parts)} parts split at sentence/word boundaries")
            segments.extend(parts)
            owners.append((i, len(parts)))
        return segments, owners

    # ------------------------------------------------------------------ translate

    def assemble(self, results: list[Translation], owners: Sequence[tuple[int, int]],
                 hypotheses: Sequence[Sequence[Hypothesis]], probs: torch.Tensor | None,
                 mixes: torch.Tensor | None, n_best: int) -> None:
        """Fill ``results`` (one per text) from the decoded pieces: per text its n-best
        (pieces joined, scored by their mean), domain tags and conditioning. ``owners`` as
        :meth:`_segments` gives them; ``hypotheses`` (and the ``[pieces, labels]`` rows of
        ``probs`` / ``mixes``) one per piece, in order. For :meth:`translate`, and for
        callers that decode the pieces their own way (the service's continuous batching)."""
        flat = [h for hyps in hypotheses for h in hyps]
        texts_out = iter(self.tokenizer.decode_tgt([h.tokens for h in flat]))
        nbests = [[(next(texts_out), float(h.score)) for h in hyps] for hyps in hypotheses]
        start = 0
        for i, count in owners:
            parts = [sorted(nb, key=lambda x: -x[1])[:n_best] for nb in
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
            if mixes is not None:
                mix = mixes[start:start + count].mean(dim=0).tolist()
                res.conditioning = {lab: w for lab, w in zip(self.labels, mix, strict=True) if w}
            start += count

    def translate(self, texts: Sequence[str], beam: int | None = None,
                  alpha: float | None = None, n_best: int | None = None,
                  max_len_a: float | None = None, max_len_b: int | None = None,
                  min_len: int | None = None, no_repeat_ngram: int | None = None,
                  batch_size: int | None = None, workers: int | None = None,
                  on_warning: Callable[[int, str], None] | None = None,
                  shortlist: bool | None = None,
                  domains: Sequence[str] | str | None = None,
                  attention: bool = False, format: str = "text") -> list[Translation]:
        """Translate ``texts``; options default to the run's ``inference`` config.

        ``format``: ``text`` (plain sentences) or ``html`` (each text an HTML document,
        answered as one with its markup kept: :mod:`translate.inference.html`).

        ``shortlist``: True/False turns the vocabulary shortlist on/off for this call (on
        needs a run with ``shortlist.pt``; without one, the whole vocabulary is used).
        ``attention``: fill each result's ``attention`` (output x source pieces).

        ``domains`` (domain-conditioned models, :mod:`translate.search.domain_choice`): None
        conditions each sentence on the tagger's thresholded prediction, label names force
        those labels, ``"none"`` switches conditioning off (unknown domain).

        ``on_warning(index, message)`` is called (besides ``Translation.warnings``) for each
        input that had to be split, with its 0-based index in ``texts``.
        """
        if isinstance(texts, str):
            raise TypeError("translate() takes a list of strings, not a single string")
        if format != "text":
            from translate.inference.html import translate_as
            return translate_as(format, self, texts, beam=beam, alpha=alpha, n_best=n_best,
                                max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len,
                                no_repeat_ngram=no_repeat_ngram, batch_size=batch_size,
                                workers=workers, on_warning=on_warning, shortlist=shortlist,
                                domains=domains, attention=attention)
        opts = self.options(beam=beam, alpha=alpha, n_best=n_best, max_len_a=max_len_a,
                            max_len_b=max_len_b, min_len=min_len,
                            no_repeat_ngram=no_repeat_ngram, batch_size=batch_size,
                            workers=workers, shortlist=shortlist)
        conditioned = bool(getattr(self.model, "conditioned", False))
        choice = choose(domains, self.labels, self.thresholds, conditioned)
        restrict = self._shortlist(opts)
        over = "vocabulary" if restrict is None else "shortlist"
        results = [Translation(text="", score=None, scores_over=over,
                               conditioned_by=choice.mode if choice else None) for _ in texts]

        def warn(i: int, msg: str) -> None:
            results[i].warnings.append(msg)
            if on_warning is not None:
                on_warning(i, msg)

        segments, owners = self._segments(texts, warn)
        if not segments:
            return results
        with torch.inference_mode():
            decoded = decode_ids(self.model, segments, opts, special=self.special,
                                 device=self.device, dtype=self.dtype,
                                 max_tokens=opts.batch_size * PIECES_PER_SENTENCE,
                                 shortlist=restrict, domains=choice, attention=attention)
        self.assemble(results, owners, decoded.hypotheses, decoded.domain_probs,
                      decoded.domain_weights, opts.n_best)
        if attention:
            attach_attention(results, owners, decoded.hypotheses, segments, self.tokenizer,
                             opts.n_best)
        return results
