"""Training losses: token cross-entropy for translation, multilabel BCE for domain tagging,
and :func:`batch_losses`, the training forward pass that produces both.

Losses are sums over real tokens (not means) so gradient accumulation and multi-batch
validation can divide by the true token count once. Everything is computed in float32 even
when the logits come out of bf16/fp16 autocast: a log-softmax over 8k+ classes in half
precision loses too much.

What the translation loss computes is the textbook one, :func:`reference_loss`: ``[B, T, V]``
logits reshaped to ``[B*T, V]`` into ``nn.CrossEntropyLoss(ignore_index=pad,
label_smoothing=ε, reduction="sum")``. :class:`TranslationLoss` is a faster way to the same
numbers (one log-softmax for the loss and the perplexity, an in-place backward); the tests
hold it to the reference on real batches, in fp32 and under bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from translate.data.batching import Batch


@dataclass
class LossOutput:
    loss: Tensor  # summed over real tokens, label-smoothed: what you backprop
    nll: Tensor  # summed unsmoothed NLL, detached: exp(nll / ntokens) is the perplexity
    ntokens: int  # number of non-pad targets


class _SmoothedNLL(torch.autograd.Function):
    """Label-smoothed NLL over rows of logits in one pass, with a hand-written backward.

    ``F.cross_entropy(label_smoothing=ε)`` plus a second unsmoothed call for the perplexity
    did two log-softmaxes over ``[N, V]`` and kept several ``[N, V]`` buffers alive for
    autograd; with V = 8k this was the largest memory-bound part of a CPU training step. Here
    the log-probabilities are computed once, both sums come out of them, and the backward
    turns that one saved buffer into the gradient *in place*
    (``softmax - (1-ε)·onehot - ε/V``), so a step holds one ``[N, V]`` float buffer instead of
    three. Because the saved buffer is consumed, the graph cannot be backpropagated twice
    (``retain_graph=True`` raises instead of silently giving a wrong gradient).

    Per row the loss is exactly ``F.cross_entropy``'s: ``(1-ε)·(-log p_y) + ε/V·Σ_v(-log p_v)``;
    rows whose ``keep`` is False contribute 0 to the loss and get a zero gradient.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, keep: Tensor, eps: float):
        logp = torch.log_softmax(logits, dim=-1)
        nll = -logp.gather(1, targets.unsqueeze(1)).squeeze(1)
        zero = logp.new_zeros(())
        nll = torch.where(keep, nll, zero)  # where, not *: a pad row may hold inf/nan
        loss = nll
        if eps > 0.0:
            smooth = torch.where(keep, -logp.sum(-1), zero) / logp.size(-1)
            loss = (1.0 - eps) * nll + eps * smooth
        ctx.save_for_backward(logp, targets, keep)
        ctx.eps = eps
        ctx.used = False
        return loss.sum(), nll.sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: Tensor, _grad_nll: Tensor):
        if ctx.used:
            raise RuntimeError("TranslationLoss: the loss graph can only be backpropagated once")
        ctx.used = True
        logp, targets, keep = ctx.saved_tensors
        grad = logp.exp_()  # softmax, reusing the saved buffer
        if ctx.eps > 0.0:
            grad.sub_(ctx.eps / grad.size(-1))
        grad.scatter_add_(1, targets.unsqueeze(1),
                          grad.new_full((grad.size(0), 1), -(1.0 - ctx.eps)))
        grad.mul_((grad_loss * keep.to(grad.dtype)).unsqueeze(1))
        return grad, None, None, None


class TranslationLoss:
    """Summed (label-smoothed) cross-entropy that ignores pad targets entirely."""

    def __init__(self, pad_id: int, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.pad_id = pad_id
        self.label_smoothing = label_smoothing

    def __call__(self, logits: Tensor, targets: Tensor) -> LossOutput:
        """logits ``[B, T, V]`` or ``[N, V]``; targets ``[B, T]`` or ``[N]``.

        The fastest call passes only the real positions (``[N, V]`` without pad rows, as
        :func:`batch_losses` does); pad rows are also handled.
        """
        flat = logits.reshape(-1, logits.size(-1)).float()
        tgt = targets.reshape(-1)
        if flat.size(0) != tgt.size(0):
            raise ValueError(
                f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree"
            )
        keep = tgt != self.pad_id
        loss, nll = _SmoothedNLL.apply(flat, tgt, keep, self.label_smoothing)
        return LossOutput(loss=loss, nll=nll.detach(), ntokens=int(keep.sum()))


def reference_loss(logits: Tensor, targets: Tensor, pad_id: int,
                   label_smoothing: float = 0.0) -> LossOutput:
    """The plain formulation :class:`TranslationLoss` must agree with (the tests' oracle).

    Two ``nn.CrossEntropyLoss`` calls over ``logits.reshape(-1, V)`` in float32: the
    label-smoothed sum to backpropagate and the unsmoothed sum for the perplexity. Clear but
    slower: two log-softmaxes and several ``[N, V]`` buffers kept for autograd.
    """
    flat = logits.reshape(-1, logits.size(-1)).float()
    tgt = targets.reshape(-1)
    smoothed = nn.CrossEntropyLoss(ignore_index=pad_id, label_smoothing=label_smoothing,
                                   reduction="sum")
    nll = nn.CrossEntropyLoss(ignore_index=pad_id, reduction="sum")
    return LossOutput(loss=smoothed(flat, tgt), nll=nll(flat, tgt).detach(),
                      ntokens=int((tgt != pad_id).sum()))


def batch_losses(model: nn.Module, batch: Batch, loss_fn: TranslationLoss,
                 pos_weight: Tensor | None) -> tuple[LossOutput, Tensor | None]:
    """Forward one batch; returns (translation loss, tagging loss or None).

    Same result as ``loss_fn(model(...).logits, tgt_out)``, but the output projection (the
    largest GEMM of the step, V = 8k) and the loss run only over the real target positions,
    packed into one ``[N, H] → [N, V]`` call: no work and no ``[B, T, V]`` buffer for padding.
    Training and the validation loss both go through here.
    """
    # logits [N, V], real positions only; a domain-conditioned model reads the gold labels
    out = model(batch.src, batch.src_lengths, batch.tgt_in, batch.src_mask,
                tgt_mask=batch.tgt_mask, domains=batch.domains)
    trans = loss_fn(out.logits, batch.tgt_out[batch.tgt_mask])
    tag = None
    if out.domain_logits is not None and batch.domains is not None:
        tag = domain_loss(out.domain_logits.float(), batch.domains, batch.domain_mask,
                          pos_weight)
    return trans, tag


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
