"""Loss semantics: pad targets are invisible, smoothing and perplexity math, domain BCE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from translate.loss import LossOutput, TranslationLoss, domain_loss, pos_weight_from_counts

PAD = 3  # id 0 (unk) is a real target below


def batch(seed: int = 0, vocab: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, vocab, generator=g)
    targets = torch.randint(0, vocab, (3, 5), generator=g)
    targets[targets == PAD] = 0
    targets[0, 0] = 0
    targets[1, 3:] = PAD
    targets[2, 1:] = PAD
    return logits, targets


def manual_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logp = logits.log_softmax(-1)
    total = torch.zeros(())
    for b in range(targets.size(0)):
        for t in range(targets.size(1)):
            if targets[b, t] != PAD:
                total = total - logp[b, t, targets[b, t]]
    return total


def test_pad_targets_contribute_nothing() -> None:
    logits, targets = batch()
    out = TranslationLoss(PAD, label_smoothing=0.0)(logits, targets)
    assert isinstance(out, LossOutput)
    assert out.ntokens == 5 + 3 + 1
    torch.testing.assert_close(out.loss, manual_nll(logits, targets))
    # arbitrary changes to logits at pad positions change nothing, smoothed or not
    changed = logits.clone()
    changed[targets == PAD] = 1e4 * torch.randn_like(changed[targets == PAD])
    for ls in (0.0, 0.2):
        fn = TranslationLoss(PAD, label_smoothing=ls)
        a, b = fn(logits, targets), fn(changed, targets)
        torch.testing.assert_close(a.loss, b.loss)
        torch.testing.assert_close(a.nll, b.nll)


def test_gradient_is_zero_at_pad_positions() -> None:
    logits, targets = batch(1)
    logits.requires_grad_(True)
    TranslationLoss(PAD, label_smoothing=0.1)(logits, targets).loss.backward()
    assert torch.all(logits.grad[targets == PAD] == 0)
    assert torch.all(logits.grad[targets != PAD].abs().sum(-1) > 0)


def test_no_smoothing_gives_nll_equal_to_loss_and_flat_inputs_work() -> None:
    logits, targets = batch(2)
    fn = TranslationLoss(PAD, label_smoothing=0.0)
    out = fn(logits, targets)
    torch.testing.assert_close(out.nll, out.loss.detach())
    flat = fn(logits.view(-1, logits.size(-1)), targets.view(-1))
    torch.testing.assert_close(flat.loss, out.loss)
    assert flat.ntokens == out.ntokens
    with pytest.raises(ValueError, match="disagree"):
        fn(logits, targets[:, :4])


def test_label_smoothing_formula_and_unsmoothed_nll() -> None:
    logits, targets = batch(3)
    logits.requires_grad_(True)
    eps, vocab = 0.1, logits.size(-1)
    out = TranslationLoss(PAD, label_smoothing=eps)(logits, targets)
    real = targets != PAD
    logp = logits.log_softmax(-1)[real]
    nll = -logp.gather(1, targets[real].unsqueeze(1)).sum()
    smooth = -logp.sum(-1).sum() / vocab
    torch.testing.assert_close(out.loss, (1 - eps) * nll + eps * smooth)
    torch.testing.assert_close(out.nll, nll.detach())
    assert not out.nll.requires_grad and out.loss.requires_grad
    assert out.loss > out.nll  # smoothing penalises a peaked distribution here


def test_perplexity_of_uniform_logits_is_vocab_size() -> None:
    vocab = 37
    logits = torch.zeros(4, 6, vocab)
    targets = torch.randint(0, vocab, (4, 6))
    targets[targets == PAD] = 0
    targets[3, 2:] = PAD
    out = TranslationLoss(PAD, label_smoothing=0.1)(logits, targets)
    assert out.ntokens == 20
    assert math.isclose(out.nll.item() / out.ntokens, math.log(vocab), rel_tol=1e-6)
    assert math.isclose(math.exp(out.nll.item() / out.ntokens), vocab, rel_tol=1e-5)


def test_half_precision_logits_are_scored_in_float32() -> None:
    logits, targets = batch(4, vocab=50)
    out16 = TranslationLoss(PAD, label_smoothing=0.1)(logits.bfloat16(), targets)
    out32 = TranslationLoss(PAD, label_smoothing=0.1)(logits.bfloat16().float(), targets)
    assert out16.loss.dtype == torch.float32
    torch.testing.assert_close(out16.loss, out32.loss)


def test_all_pad_batch_is_zero_not_nan() -> None:
    logits = torch.randn(2, 3, 7)
    targets = torch.full((2, 3), PAD)
    out = TranslationLoss(PAD, label_smoothing=0.1)(logits, targets)
    assert out.ntokens == 0 and out.loss.item() == 0.0 and out.nll.item() == 0.0


# ---------------------------------------------------------------------------- domain loss


def domain_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(5, 4, generator=g, requires_grad=True)
    targets = (torch.rand(5, 4, generator=g) > 0.6).float()
    targets[1] = 0
    targets[3] = 0
    targets[0, 2] = 1
    row_mask = targets.sum(-1) > 0
    return logits, targets, row_mask


def test_domain_loss_is_bce_with_logits_over_labelled_rows_only() -> None:
    logits, targets, row_mask = domain_batch()
    assert row_mask.tolist().count(False) >= 2
    expect = nn.BCEWithLogitsLoss()(logits[row_mask], targets[row_mask])
    got = domain_loss(logits, targets, row_mask)
    torch.testing.assert_close(got, expect)
    got.backward()
    assert torch.all(logits.grad[~row_mask] == 0)
    # unlabelled rows' logits can be anything (even huge) without effect
    wild = logits.detach().clone()
    wild[~row_mask] = 1e6
    torch.testing.assert_close(domain_loss(wild, targets, row_mask), expect.detach())


def test_domain_loss_pos_weight() -> None:
    logits, targets, row_mask = domain_batch()
    pw = torch.tensor([1.0, 3.0, 0.5, 10.0])
    expect = nn.BCEWithLogitsLoss(pos_weight=pw)(logits[row_mask], targets[row_mask])
    torch.testing.assert_close(domain_loss(logits, targets, row_mask, pw), expect)


def test_domain_loss_without_labelled_rows_is_a_differentiable_zero() -> None:
    logits = torch.randn(3, 2, requires_grad=True)
    loss = domain_loss(logits, torch.zeros(3, 2), torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_domain_loss_matches_stable_formula_for_extreme_logits() -> None:
    logits = torch.tensor([[80.0, -80.0]])
    targets = torch.tensor([[0.0, 1.0]])
    got = domain_loss(logits, targets, torch.tensor([True]))
    assert torch.isfinite(got)
    torch.testing.assert_close(got, torch.tensor(80.0))
    torch.testing.assert_close(got, F.softplus(torch.tensor(80.0)))


def test_pos_weight_from_counts() -> None:
    w = pos_weight_from_counts([10, 50, 0, 100, 1], n_rows=100, max_weight=20.0)
    torch.testing.assert_close(w, torch.tensor([9.0, 1.0, 1.0, 1 / 20, 20.0]))
