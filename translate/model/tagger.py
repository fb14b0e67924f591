"""Multilabel domain tagger on top of the encoder: pooled states → MLP → one logit per label.

Pooling never counts padding, so a sentence's domain logits don't depend on the batch it is in.
Logits (not probabilities) come out: the loss uses ``BCEWithLogits`` for numerical stability.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn


class DomainTagger(nn.Module):
    """``pooling="mean"``: masked mean; ``"attention"``: a learned query, masked softmax."""

    def __init__(
        self,
        enc_dim: int,
        hidden: int,
        n_labels: int,
        pooling: Literal["mean", "attention"],
        dropout: float,
    ) -> None:
        super().__init__()
        if n_labels < 1:
            raise ValueError(f"a domain tagger needs at least one label, got {n_labels}")
        if pooling not in ("mean", "attention"):
            raise ValueError(f"unknown tagger pooling {pooling!r}; expected mean or attention")
        self.pooling = pooling
        if pooling == "attention":
            self.pool_proj = nn.Linear(enc_dim, hidden)
            self.pool_query = nn.Linear(hidden, 1, bias=False)
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(enc_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_labels),
        )

    def pool(self, states: Tensor, mask: Tensor) -> Tensor:
        """states ``[B, S, D]``, mask ``[B, S]`` bool → ``[B, D]``."""
        if self.pooling == "mean":
            m = mask.unsqueeze(-1).to(states.dtype)
            return (states * m).sum(1) / m.sum(1).clamp(min=1.0)
        scores = self.pool_query(torch.tanh(self.pool_proj(states))).squeeze(-1)  # [B, S]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        return torch.bmm(weights.unsqueeze(1).to(states.dtype), states).squeeze(1)

    def forward(self, states: Tensor, mask: Tensor) -> Tensor:
        """Domain logits ``[B, n_labels]``."""
        return self.mlp(self.pool(states, mask))
