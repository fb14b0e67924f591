"""Domain conditioning: one learned embedding per label, mixed by per-sentence label weights.

A sentence's domain enters the decoder as ``weights @ table``: ``weights [B, L]`` (one row
per sentence over the tagger's labels) times the label embeddings ``table [L, dim]`` gives a
``[B, dim]`` mixture. The weights are

* in training, the gold labels as a normalised multi-hot row (a pair found in two domains'
  folders gets half of each), replaced by zeros with probability ``label_dropout``;
* at inference, whatever the caller chooses (:mod:`translate.search.domain_choice`): the tagger's
  prediction, forced labels, or zeros.

All-zero weights give the zero vector, which is the "unknown domain" input: label dropout
trains the model on it, so a sentence whose labels are unknown still gets a translation the
model was trained to give, and rows without gold labels (unlabelled sources) are exactly
that case. Where the mixture enters the decoder and why: :class:`translate.model.decoder.Decoder`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def gold_mixture(labels: Tensor, label_dropout: float, training: bool,
                 generator: torch.Generator | None = None) -> Tensor:
    """Normalised multi-hot rows of ``labels [B, L]``; in training each row is replaced by
    zeros with probability ``label_dropout`` (drawn per sentence, from ``generator`` or
    torch's global generator, so a seeded run and its resume draw the same rows)."""
    labels = labels.float()
    mix = labels / labels.sum(dim=-1, keepdim=True).clamp(min=1.0)
    if training and label_dropout > 0.0:
        device = generator.device if generator is not None else labels.device
        keep = torch.rand(labels.size(0), generator=generator, device=device) >= label_dropout
        mix = mix * keep.to(mix.device, mix.dtype).unsqueeze(1)
    return mix


class DomainMixer(nn.Module):
    """``table [n_labels, dim]``: the label embeddings; ``forward(weights [B, L]) -> [B, dim]``.

    With ``out_dim`` > 0 also ``out_shift [dim, out_dim]``: :meth:`shift` maps a mixture to
    a vector added to the output layer's input (the domain's direct say in the word choice;
    the decoder's recurrence has to learn to carry the domain there, which a model trained
    for a few hundred steps has barely begun to). It starts at zero, so training begins from
    the input-only model and the zero mixture shifts nothing.

    Bare parameters rather than ``nn.Linear``, so dynamic int8 quantization (which swaps
    every ``nn.Linear``) leaves these few floats as they are.
    """

    def __init__(self, n_labels: int, dim: int, label_dropout: float, out_dim: int = 0) -> None:
        super().__init__()
        if n_labels < 1:
            raise ValueError(f"domain conditioning needs at least one label, got {n_labels}")
        self.n_labels = n_labels
        self.dim = dim
        self.label_dropout = label_dropout
        self.table = nn.Parameter(torch.empty(n_labels, dim))
        # Registered only when used: a conditioned run from before the option has no such key.
        self.out_shift = nn.Parameter(torch.zeros(dim, out_dim)) if out_dim > 0 else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.table, -0.1, 0.1)  # the scale of the word embeddings
        if self.out_shift is not None:
            nn.init.zeros_(self.out_shift)

    def shift(self, domain: Tensor | None) -> Tensor | None:
        """The output layer's shift ``[N, out_dim]`` for mixtures ``domain [N, dim]``; None
        without an output shift or without a mixture."""
        if self.out_shift is None or domain is None:
            return None
        return domain @ self.out_shift.to(domain.dtype)

    def forward(self, weights: Tensor) -> Tensor:
        if weights.dim() != 2 or weights.size(1) != self.n_labels:
            raise ValueError(f"domain weights must be [batch, {self.n_labels}], got "
                             f"{tuple(weights.shape)}")
        return weights.to(self.table.dtype) @ self.table

    def from_gold(self, labels: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """The training mixture weights ``[B, L]`` for gold multi-hot ``labels`` (None: a
        batch without labels, all unknown)."""
        if labels is None:
            return torch.zeros(batch, self.n_labels, device=device)
        return gold_mixture(labels, self.label_dropout, self.training)
