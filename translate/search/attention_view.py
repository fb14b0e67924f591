"""Attention as users see it: source and output pieces with the weights between them.

Search fills :attr:`translate.search.beam.Hypothesis.attention` with a bare matrix of ids'
positions; this module names the rows and columns (sentencepiece pieces, the output's eos
as ``</s>``), hands the result to :class:`~translate.inference.translator.Translation` and to
``infer --format jsonl --attention``, and renders the heatmaps the trainer logs at each
validation. Nothing here runs unless attention was asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EOS_PIECE", "AttentionView", "add_attention_json", "attach_attention",
           "validation_heatmaps", "view_of"]

EOS_PIECE = "</s>"  # the last row: the step that chose end-of-sentence


@dataclass
class AttentionView:
    """``weights[t, s]``: how much output piece ``t`` attended to source piece ``s``.

    ``target_pieces`` are the output's pieces followed by ``</s>``; ``source_pieces`` the
    input's pieces (the model's source has no eos). Each row sums to 1. For an input split
    into parts (longer than the model's limit) the pieces are concatenated and the matrix is
    block-diagonal: each part was translated on its own and attended only to itself.
    """

    source_pieces: list[str]
    target_pieces: list[str]
    weights: np.ndarray  # [len(target_pieces), len(source_pieces)] float32

    def to_json(self, digits: int = 4) -> dict:
        """Plain JSON: the pieces and the weights rounded to ``digits`` decimals."""
        weights = np.round(self.weights.astype(np.float64), digits)
        return {"source_pieces": list(self.source_pieces),
                "target_pieces": list(self.target_pieces), "weights": weights.tolist()}


def view_of(tok: Any, src_ids: Sequence[int], hyp: Any) -> AttentionView:
    """Name the rows and columns of one hypothesis' attention matrix."""
    if hyp.attention is None:
        raise ValueError("this hypothesis was decoded without attention=True")
    src = [str(p) for p in tok.src_model.id_to_piece(list(src_ids))] if src_ids else []
    tgt = [str(p) for p in tok.tgt_model.id_to_piece(list(hyp.tokens))] if hyp.tokens else []
    weights = hyp.attention.float().numpy()
    if weights.shape[0] == len(tgt):  # the fallback of a search that found no output at all
        return AttentionView(src, tgt, weights)
    return AttentionView(src, [*tgt, EOS_PIECE], weights)


def block_diagonal(views: Sequence[AttentionView]) -> AttentionView:
    """One view of the parts of a split input (see :class:`AttentionView`)."""
    rows = sum(len(v.target_pieces) for v in views)
    cols = sum(len(v.source_pieces) for v in views)
    weights = np.zeros((rows, cols), dtype=np.float32)
    r = c = 0
    for v in views:
        weights[r:r + v.weights.shape[0], c:c + v.weights.shape[1]] = v.weights
        r, c = r + v.weights.shape[0], c + v.weights.shape[1]
    return AttentionView([p for v in views for p in v.source_pieces],
                         [p for v in views for p in v.target_pieces], weights)


def attach_attention(results: Sequence[Any], owners: Sequence[tuple[int, int]],
                     hypotheses: Sequence[Sequence[Any]], segments: Sequence[Sequence[int]],
                     tok: Any, n_best: int) -> None:
    """Set ``attention`` (the best output's) and ``nbest_attention`` (parallel to ``nbest``)
    of each :class:`~translate.inference.translator.Translation`, ranked as the translator ranks its
    n-best list. ``owners``: (result index, number of segments) in segment order."""
    start = 0
    for i, count in owners:
        parts = []
        for p in range(start, start + count):
            ranked = sorted(hypotheses[p], key=lambda h: -float(h.score))[:n_best]
            parts.append([view_of(tok, segments[p], h) for h in ranked])
        if count == 1:
            views = parts[0]
        else:  # one joined hypothesis: the best of each part
            views = [block_diagonal([p[0] for p in parts if p])]
        results[i].nbest_attention = views
        results[i].attention = views[0] if views else None
        start += count


def add_attention_json(obj: dict, result: Any) -> None:
    """Add a translation's attention to its jsonl object (and to each n-best entry)."""
    if result.attention is None:
        return
    obj["attention"] = result.attention.to_json()
    for entry, view in zip(obj.get("nbest", []), result.nbest_attention, strict=False):
        entry["attention"] = view.to_json()


def validation_heatmaps(model: Any, src_ids: Sequence[Sequence[int]], tok: Any, opts: Any,
                        device: Any, dtype: Any, step: int,
                        rows: Sequence[int] | None = None) -> tuple[list, list[str]]:
    """Greedy translations of ``src_ids`` (as validation decodes them) rendered as heatmaps
    (PIL images), with one caption each: the step, the sentence's row of the validation
    split (``rows``, 0-based; default: 0, 1, ...), shown 1-based, and the output."""
    from translate.search.decoding import decode_ids
    from translate.tracking.heatmap import render_heatmap

    special = {"bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id}
    decoded = decode_ids(model, src_ids, opts, special=special, device=device, dtype=dtype,
                         greedy=True, attention=True)
    images, captions = [], []
    rows = range(len(src_ids)) if rows is None else rows
    for row, ids, hyps in zip(rows, src_ids, decoded.hypotheses, strict=True):
        if not hyps:
            continue
        view = view_of(tok, ids, hyps[0])
        (text,) = tok.decode_tgt([hyps[0].tokens])
        images.append(render_heatmap(view.weights, view.source_pieces, view.target_pieces))
        captions.append(f"step {step}, valid sentence {row + 1}: {text}")
    return images, captions
