"""Attention over encoder states: Luong dot / general and Bahdanau MLP.

One module serves both decoder modes: one query per hypothesis ``[N, H]`` (step-wise
decoding, beam search) and all target steps at once ``[B, T, H]`` (teacher forcing without
input feeding). In beam search the ``N = B * k`` hypotheses of a sentence are consecutive rows
and share its keys, which are *not* repeated k times: the query is viewed as ``[B, k, H]``, so
each sentence's k scores are one small GEMM against its own keys instead of k vector products
against k copies (several times faster per step; docs/benchmarks.md has the figures). Anything
that depends only on the keys (the projection in ``general`` and ``mlp``) is computed once per
sentence by :meth:`Attention.precompute` and stored with the encoder output, so beam search
does not redo it at every step.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

AttentionKind = Literal["dot", "general", "mlp"]


class Attention(nn.Module):
    """Score queries against keys, mask padded keys before the softmax, return context.

    ``general`` is ``q^T W k``; it is computed as ``q · (W k)`` so the key projection can be
    cached, which is the same bilinear form and lets the query size differ from the key size.
    """

    def __init__(self, kind: AttentionKind, query_dim: int, key_dim: int) -> None:
        super().__init__()
        self.kind = kind
        self.query_dim = query_dim
        self.key_dim = key_dim
        if kind == "dot":
            if query_dim != key_dim:
                raise ValueError(
                    f"dot attention needs query size == key size, got {query_dim} and {key_dim}"
                    " (use 'general' or 'mlp', or set dec_hidden = 2 * enc_hidden)"
                )
        elif kind == "general":
            self.key_proj = nn.Linear(key_dim, query_dim, bias=False)
        elif kind == "mlp":
            self.key_proj = nn.Linear(key_dim, query_dim, bias=False)
            self.query_proj = nn.Linear(query_dim, query_dim, bias=True)
            self.energy = nn.Linear(query_dim, 1, bias=False)
        else:
            raise ValueError(f"unknown attention kind {kind!r}; expected dot, general or mlp")

    def precompute(self, keys: Tensor) -> Tensor | None:
        """Key-only part of the score, ``[B, S, query_dim]``; None for dot attention."""
        if self.kind == "dot":
            return None
        return self.key_proj(keys)

    def forward(
        self, query: Tensor, keys: Tensor, mask: Tensor, proj_keys: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Attend.

        query: ``[N, Hq]`` (``N`` a multiple of ``B``: rows ``i * N/B ...`` belong to sentence
        ``i``) or ``[B, T, Hq]``; keys: ``[B, S, Hk]``; mask: ``[B, S]`` bool with True for
        real positions; proj_keys: the result of :meth:`precompute` (computed here
        when None). Returns ``(context [.., Hk], weights [.., S])`` with the query's leading
        shape. Padded positions get weight exactly 0; each row sums to 1.
        """
        single = query.dim() == 2
        if single:
            rows, batch = query.size(0), keys.size(0)
            group, rest = divmod(rows, batch) if batch else (1, rows)
            if rest:
                raise ValueError(f"{rows} query rows cannot be grouped over {batch} sentences")
            query = query.view(batch, group, query.size(1))  # [B, group, Hq]
        if proj_keys is None and self.kind != "dot":
            proj_keys = self.precompute(keys)

        if self.kind == "dot":
            scores = torch.bmm(query, keys.transpose(1, 2))  # [B, T, S]
        elif self.kind == "general":
            scores = torch.bmm(query, proj_keys.transpose(1, 2))
        else:  # mlp: v^T tanh(W_q q + W_k k), broadcast over [B, T, S, A]
            q = self.query_proj(query).unsqueeze(2)  # [B, T, 1, A]
            scores = self.energy(torch.tanh(q + proj_keys.unsqueeze(1))).squeeze(-1)

        # finfo.min rather than -inf: a fully masked row (never produced by the encoder, but
        # cheap to guard) gives a uniform distribution instead of NaN.
        scores = scores.masked_fill(~mask.unsqueeze(1), torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        context = torch.bmm(weights.to(keys.dtype), keys)  # [B, T, Hk]
        if single:
            return context.reshape(rows, context.size(-1)), weights.reshape(rows, keys.size(1))
        return context, weights
