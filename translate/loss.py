"""Training losses: token cross-entropy for translation, multilabel BCE for domain tagging.

Losses are sums over real tokens (not means) so gradient accumulation and multi-batch
validation can divide by the true token count once. Everything is computed in float32 even
when the logits come out of bf16/fp16 autocast: a log-softmax over 8k+ classes in half
precision loses too much.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class LossOutput:
    loss: Tensor  # summed over real tokens, label-smoothed: what you backprop
    nll: Tensor  # summed unsmoothed NLL, detached: exp(nll / ntokens) is the perplexity
    ntokens: int  # number of non-pad targets


class TranslationLoss:
    """Summed (label-smoothed) cross-entropy that ignores pad targets entirely."""

    def __init__(self, pad_id: int, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.pad_id = pad_id
        self.label_smoothing = label_smoothing

    def __call__(self, logits: Tensor, targets: Tensor) -> LossOutput:
        """logits ``[B, T, V]`` or ``[N, V]``; targets ``[B, T]`` or ``[N]``."""
        flat = logits.reshape(-1, logits.size(-1)).float()
        tgt = targets.reshape(-1)
        if flat.size(0) != tgt.size(0):
            raise ValueError(
                f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree"
            )
        loss = F.cross_entropy(
            flat, tgt, ignore_index=self.pad_id,
            label_smoothing=self.label_smoothing, reduction="sum",
        )
        if self.label_smoothing == 0.0:
            nll = loss.detach()
        else:
            with torch.no_grad():
                nll = F.cross_entropy(flat, tgt, ignore_index=self.pad_id, reduction="sum")
        ntokens = int((tgt != self.pad_id).sum())
        return LossOutput(loss=loss, nll=nll, ntokens=ntokens)


def domain_loss(
    logits: Tensor, targets: Tensor, row_mask: Tensor, pos_weight: Tensor | None = None
) -> Tensor:
    """Mean ``BCEWithLogits`` over the labels of rows that have at least one label.

    Rows without any label carry no evidence about their domains (unknown is not "none of
    them"), so they are excluded rather than pushed to all-negative. Returns a zero that is
    still attached to the graph when no row is labelled, so ``backward`` works uniformly.
    No host sync: rows are weighted, not boolean-indexed.
    """
    logits = logits.float()
    per_elem = F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), pos_weight=pos_weight, reduction="none"
    )
    row_mask = row_mask.to(logits.device)
    per_row = torch.where(row_mask, per_elem.mean(dim=-1), per_elem.new_zeros(()))
    n_rows = row_mask.sum().clamp(min=1).to(per_row.dtype)
    return per_row.sum() / n_rows


def pos_weight_from_counts(
    label_counts: Sequence[int] | Tensor, n_rows: int, max_weight: float = 100.0
) -> Tensor:
    """Per-label ``pos_weight = negatives / positives`` from training counts over labelled rows.

    Balances rare labels against the many negatives. Clamped to ``[1/max_weight, max_weight]``
    so a label seen once doesn't dominate and one present in every row keeps some weight;
    labels never seen get 1.
    """
    counts = torch.as_tensor(label_counts, dtype=torch.float32)
    weight = (n_rows - counts) / counts.clamp(min=1.0)
    weight = torch.where(counts > 0, weight, torch.ones_like(weight))
    return weight.clamp(min=1.0 / max_weight, max=max_weight)
