"""Tensor helpers of :mod:`translate.search.beam`: a fast row top-k, n-gram blocking, and the
attention of a hypothesis' own history.

They know nothing of the model; each is tested on its own or through the searches.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["backtrack_attention", "block_repeated_ngrams", "hypothesis_attention", "row_topk"]


def row_topk(x: Tensor, n: int, chunk: int = 100) -> tuple[Tensor, Tensor]:
    """``x.topk(n, dim=1)`` (values descending, with their column indices), computed faster.

    ``torch.topk`` over a ``[R, V]`` vocabulary row costs several times a plain max-reduction
    on the CPU. The columns are cut into chunks of ``chunk``; a row's ``n`` largest values
    all lie in its ``n`` chunks with the largest maxima (any value outside them is beaten by
    the ``n`` chunk maxima), so one vectorised max per chunk, a small top-k over the chunk
    maxima and a top-k over the ``n * chunk`` values of those chunks give the same values.
    Columns past the last whole chunk are always candidates. Exact ties may pick a different
    (equally scored) index than ``torch.topk``; both searches use this one function.
    """
    rows, vocab = x.shape
    n_chunks = vocab // chunk
    if x.device.type != "cpu" or n >= n_chunks or rows == 0:
        return x.topk(n, dim=1)
    whole = n_chunks * chunk
    blocks = x[:, :whole].view(rows, n_chunks, chunk)
    top_chunks = blocks.amax(dim=2).topk(n, dim=1).indices  # [R, n]
    if n == 1:  # one chunk per row: the gather is as cheap as anything
        cand = blocks.gather(1, top_chunks.unsqueeze(2).expand(-1, -1, chunk)).view(rows, chunk)
    else:
        # The chosen chunks are copied as rows of a view whose row i holds the ``chunk``
        # values from flat position i on: one contiguous copy per chunk, where a gather over
        # the blocks would read an index per element.
        starts = top_chunks * chunk + torch.arange(0, rows * vocab, vocab,
                                                   device=x.device).unsqueeze(1)
        windows = x.reshape(-1).unfold(0, chunk, 1)
        cand = windows.index_select(0, starts.view(-1)).view(rows, n * chunk)
    if whole < vocab:
        cand = torch.cat([cand, x[:, whole:]], dim=1)
    values, pos = cand.topk(n, dim=1)
    in_chunk = pos < n * chunk
    col = top_chunks.gather(1, (pos // chunk).clamp(max=n - 1)) * chunk + pos % chunk
    return values, torch.where(in_chunk, col, pos - n * chunk + whole)


def block_repeated_ngrams(lprobs: Tensor, history: Tensor, n: int, pad_id: int) -> None:
    """Ban every token that would complete an n-gram already present in ``history``.

    ``history`` is [R, t] generated tokens (no bos). Vectorised over rows: compare the last
    ``n - 1`` tokens against every earlier (n-1)-prefix and scatter ``-inf`` onto the tokens
    that followed a match. Non-matches scatter onto ``pad_id``, which is banned anyway, so
    duplicate indices all write the same value and the result is deterministic.
    """
    t = history.size(1)
    if n <= 0 or t < n:
        return
    grams = history.unfold(1, n, 1)  # [R, t - n + 1, n]
    prefix = history[:, t - n + 1 :]  # [R, n - 1]
    match = (grams[:, :, :-1] == prefix.unsqueeze(1)).all(-1)  # [R, t - n + 1]
    banned = torch.where(match, grams[:, :, -1], torch.full_like(grams[:, :, -1], pad_id))
    lprobs.scatter_(1, banned, -math.inf)


def backtrack_attention(step_attn: list[Tensor], parents: list[Tensor], rows: Tensor,
                        ends: Tensor) -> Tensor:
    """Each hypothesis' attention history ``[H, steps, S]`` by following back-pointers.

    ``step_attn[t]``: the weights of the rows searched at step ``t``; ``parents[t][r]``: the
    row of step ``t`` that row ``r`` of step ``t + 1`` continues; ``rows`` / ``ends``: the
    row and step at which each hypothesis chose eos. Rows past a hypothesis' end are 0.
    """
    out = step_attn[0].new_zeros((rows.numel(), len(step_attn), step_attn[0].size(1)))
    cur = torch.zeros_like(rows)
    for t in range(len(step_attn) - 1, -1, -1):
        cur = torch.where(ends == t, rows, cur)
        live = (ends >= t).unsqueeze(1)
        weights = step_attn[t]
        out[:, t] = torch.where(live, weights[cur.clamp(max=weights.size(0) - 1)], 0.0)
        if t:
            cur = parents[t - 1][cur.clamp(max=parents[t - 1].numel() - 1)]
    return out


def hypothesis_attention(attn: Tensor, i: int, n_rows: int, src_len: int) -> Tensor:
    """Hypothesis ``i``'s rows (tokens + eos) over its real source positions, as a copy."""
    return attn[i, :n_rows, :src_len].clone()
