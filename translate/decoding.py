"""Decode many sentences at once: length-sorted batches in, results in input order out.

Validation (greedy, during training) and the translator (beam search, at inference) both
need the same thing: sort sentences by length so batches carry little padding, run the
search, then put every result back where its sentence came from. One implementation keeps
the two from drifting apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from translate.config import InferenceConfig
from translate.runtime import autocast, threads_per_worker
from translate.search import EvalMode, Hypothesis, beam_search, greedy_search
from translate.shortlist import Shortlist


@dataclass
class Decoded:
    """Per input sentence: its n-best list and (when the model tags domains) label probs."""

    hypotheses: list[list[Hypothesis]]
    domain_probs: torch.Tensor | None  # [N, L] float32 on CPU


def length_sorted_batches(lengths: Sequence[int], batch_size: int,
                          max_tokens: int = 0) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, for early OOMs)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = max([lengths[j] for j in current[:1]] + [lengths[i], 1])
        too_many = len(current) >= batch_size
        too_wide = max_tokens > 0 and (len(current) + 1) * width > max_tokens
        if current and (too_many or too_wide):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _pad(seqs: list[list[int]], pad_id: int, device: torch.device):
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    tensors = [torch.tensor(s, dtype=torch.long) for s in seqs]
    src = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=pad_id)
    return src.to(device, non_blocking=True), lengths


def decode_ids(model: torch.nn.Module, src_ids: Sequence[Sequence[int]], opts: InferenceConfig,
               *, special: dict[str, int], device: torch.device,
               dtype: torch.dtype = torch.float32, greedy: bool = False,
               max_tokens: int = 0, shortlist: Shortlist | None = None) -> Decoded:
    """Translate already-encoded sentences, in input order.

    An empty sentence is fed as a lone ``eos`` (as ``batching.collate`` does in training):
    a packed LSTM cannot take length 0.

    ``special`` holds ``bos_id``, ``eos_id`` and ``pad_id``. ``greedy`` forces greedy search
    (validation); otherwise ``opts.beam_size`` decides, beam 1 being greedy.

    ``opts.workers > 1`` (CPU only) decodes that many batches at once in threads, each with
    its share of torch's threads. Search is mostly small GEMMs and elementwise ops that two
    cores split poorly; one batch per core keeps both busy (see :class:`InferenceConfig`).
    Each batch is searched exactly as alone, so the outputs do not depend on ``workers``.

    ``shortlist``: search each batch over its vocabulary shortlist only
    (:mod:`translate.shortlist`); scores are then log-probabilities over the shortlist.
    """
    results: list[list[Hypothesis] | None] = [None] * len(src_ids)
    probs: torch.Tensor | None = None
    rows = [list(ids) or [special["eos_id"]] for ids in src_ids]
    batches = length_sorted_batches([len(r) for r in rows], opts.batch_size, max_tokens)

    def run(batch: list[int]) -> tuple[list[list[Hypothesis]], torch.Tensor | None]:
        # inference_mode and autocast are thread-local: each worker enters its own.
        src, src_lengths = _pad([rows[i] for i in batch], special["pad_id"], device)
        with torch.inference_mode(), autocast(device, dtype):
            enc = model.encode(src, src_lengths)
            if shortlist is None:
                hyps = _search(model, src, src_lengths, enc, opts, special, greedy)
            else:
                view = shortlist.restrict(model, [rows[i] for i in batch], device)
                hyps = view.to_vocab(_search(view, src, src_lengths, enc, opts,
                                             view.special(special), greedy))
            tag_logits = model.tag(enc)
        tag = None if tag_logits is None else torch.sigmoid(tag_logits.float()).cpu()
        return hyps, tag

    workers = min(opts.workers, len(batches)) if device.type == "cpu" else 1
    # One EvalMode around all batches: per-thread enter/exit pairs would race on the flag.
    with EvalMode(model):
        if workers > 1:
            with threads_per_worker(workers), ThreadPoolExecutor(workers) as pool:
                outputs = list(pool.map(run, batches))
        else:
            outputs = [run(batch) for batch in batches]
    for batch, (hyps, tag) in zip(batches, outputs, strict=True):
        for i, h in zip(batch, hyps, strict=True):
            results[i] = h
        if tag is not None:
            if probs is None:
                probs = torch.zeros(len(src_ids), tag.shape[-1])
            probs[torch.tensor(batch)] = tag
    return Decoded(hypotheses=[r or [] for r in results], domain_probs=probs)


def _search(model, src, src_lengths, enc, opts: InferenceConfig, special: dict[str, int],
            greedy: bool) -> list[list[Hypothesis]]:
    common = dict(max_len_a=opts.max_len_a, max_len_b=opts.max_len_b, min_len=opts.min_len,
                  enc=enc, **special)
    if greedy or (opts.beam_size == 1 and opts.no_repeat_ngram == 0):
        return greedy_search(model, src, src_lengths, alpha=opts.alpha, **common)
    return beam_search(model, src, src_lengths, beam_size=opts.beam_size, n_best=opts.n_best,
                       alpha=opts.alpha, no_repeat_ngram=opts.no_repeat_ngram, **common)
