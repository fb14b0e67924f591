"""Decode many sentences at once: length-sorted batches in, results in input order out.

Validation (greedy, during training) and the translator (beam search, at inference) both
need the same thing: sort sentences by length so batches carry little padding, run the
search, then put every result back where its sentence came from. One implementation keeps
the two from drifting apart, and its batches come from the same code as training's
(:func:`~translate.data.batching.collate` over a
:class:`~translate.data.batching.BatchSampler`), so an
empty source or a padding mask means the same thing in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from translate.config import InferenceConfig
from translate.data.batching import BatchSampler, EncodedSplit, collate, source_split
from translate.runtime import autocast, threads_per_worker
from translate.search.beam import EvalMode, Hypothesis, beam_search, greedy_search
from translate.search.domain_choice import DomainChoice
from translate.search.shortlist import Shortlist


@dataclass
class Decoded:
    """Per input sentence: its n-best list, (when the model tags domains) label probs and
    (when it is domain-conditioned) the label weights it was decoded with."""

    hypotheses: list[list[Hypothesis]]
    domain_probs: torch.Tensor | None  # [N, L] float32 on CPU
    domain_weights: torch.Tensor | None = None  # [N, L] float32 on CPU


def inference_batches(split: EncodedSplit, batch_size: int,
                      max_tokens: int = 0) -> Sequence[list[int]]:
    """Row indices of ``split`` in batches of similar source length, longest batch first.

    At most ``batch_size`` sentences per batch and, when ``max_tokens`` > 0, at most that many
    padded source positions (a single longer sentence still gets a batch of its own).
    """
    if max_tokens > 0:
        sampler = BatchSampler(split.src_lens, split.tgt_lens, "tokens", max_tokens,
                               shuffle=False, max_sentences=batch_size, longest_first=True)
    else:
        sampler = BatchSampler(split.src_lens, split.tgt_lens, "sentences",
                               batch_size=batch_size, shuffle=False, longest_first=True)
    return sampler.batches(0)


def decode_ids(model: torch.nn.Module, src_ids: Sequence[Sequence[int]], opts: InferenceConfig,
               *, special: dict[str, int], device: torch.device,
               dtype: torch.dtype = torch.float32, greedy: bool = False,
               max_tokens: int = 0, shortlist: Shortlist | None = None,
               domains: DomainChoice | None = None,
               attention: bool = False) -> Decoded:
    """Translate already-encoded sentences, in input order.

    Batches are :func:`inference_batches` collated by :func:`translate.data.batching.collate`, so
    an empty sentence is fed as a lone ``eos``, as in training (a packed LSTM cannot take
    length 0).

    ``special`` holds ``bos_id``, ``eos_id`` and ``pad_id``. ``greedy`` forces greedy search
    (validation); otherwise ``opts.beam_size`` decides, beam 1 being greedy.

    ``opts.workers > 1`` (CPU only) decodes that many batches at once in threads, each with
    its share of torch's threads. Search is mostly small GEMMs and elementwise ops that two
    cores split poorly; one batch per core keeps both busy (see :class:`InferenceConfig`).
    Each batch is searched exactly as alone, so the outputs do not depend on ``workers``.

    ``shortlist``: search each batch over its vocabulary shortlist only
    (:mod:`translate.search.shortlist`); scores are then log-probabilities over the shortlist.

    ``domains``: how a domain-conditioned model is told each sentence's domain
    (:class:`~translate.search.domain_choice.DomainChoice`; None: the tagger's prediction at
    threshold 0.5). Ignored by a model without conditioning.
    ``attention``: fill every hypothesis' :attr:`~translate.search.beam.Hypothesis.attention`
    (off by default: the search then keeps no attention at all).
    """
    conditioned = bool(getattr(model, "conditioned", False))
    choice = domains or DomainChoice.predicted()
    results: list[list[Hypothesis] | None] = [None] * len(src_ids)
    probs = weights = None
    split = source_split(src_ids)
    batches = inference_batches(split, opts.batch_size, max_tokens)

    def run(rows: list[int]) -> tuple[list[list[Hypothesis]], torch.Tensor | None,
                                      torch.Tensor | None]:
        batch = collate(split, rows, special["pad_id"], special["bos_id"], special["eos_id"])
        if device.type == "cuda":
            batch = batch.pin_memory()  # page-locked: the non_blocking copy is truly async
        batch = batch.to(device, non_blocking=True)
        # inference_mode and autocast are thread-local: each worker enters its own.
        with torch.inference_mode(), autocast(device, dtype):
            enc = model.encode(batch.src, batch.src_lengths, batch.src_mask)
            tag_logits = model.tag(enc)
            tag = None if tag_logits is None else torch.sigmoid(tag_logits.float()).cpu()
            mix = None
            if conditioned:
                mix = choice.weights(rows, tag, model.n_labels)
                enc = model.condition(enc, mix.to(device))
            if shortlist is None:
                hyps = _search(model, batch.src, batch.src_lengths, enc, opts, special, greedy,
                               attention)
            else:
                view = shortlist.restrict(model, [split.src_ids[i] for i in rows], device)
                hyps = view.to_vocab(_search(view, batch.src, batch.src_lengths, enc, opts,
                                             view.special(special), greedy, attention))
        return hyps, tag, mix

    workers = min(opts.workers, len(batches)) if device.type == "cpu" else 1
    # One EvalMode around all batches: per-thread enter/exit pairs would race on the flag.
    with EvalMode(model):
        if workers > 1:
            with threads_per_worker(workers), ThreadPoolExecutor(workers) as pool:
                outputs = list(pool.map(run, batches))
        else:
            outputs = [run(batch) for batch in batches]
    for batch, (hyps, tag, mix) in zip(batches, outputs, strict=True):
        for i, h in zip(batch, hyps, strict=True):
            results[i] = h
        probs = _scatter(probs, batch, tag, len(src_ids))
        weights = _scatter(weights, batch, mix, len(src_ids))
    return Decoded(hypotheses=[r or [] for r in results], domain_probs=probs,
                   domain_weights=weights)


def _scatter(into: torch.Tensor | None, rows: list[int], values: torch.Tensor | None,
             n: int) -> torch.Tensor | None:
    """Put one batch's ``[B, L]`` rows in their input positions of an ``[n, L]`` table."""
    if values is None:
        return into
    if into is None:
        into = torch.zeros(n, values.shape[-1])
    into[torch.tensor(rows)] = values
    return into


def _search(model, src, src_lengths, enc, opts: InferenceConfig, special: dict[str, int],
            greedy: bool, attention: bool = False) -> list[list[Hypothesis]]:
    common = dict(max_len_a=opts.max_len_a, max_len_b=opts.max_len_b, min_len=opts.min_len,
                  enc=enc, attention=attention, **special)
    if greedy or (opts.beam_size == 1 and opts.no_repeat_ngram == 0):
        return greedy_search(model, src, src_lengths, alpha=opts.alpha, **common)
    return beam_search(model, src, src_lengths, beam_size=opts.beam_size, n_best=opts.n_best,
                       alpha=opts.alpha, no_repeat_ngram=opts.no_repeat_ngram, **common)
