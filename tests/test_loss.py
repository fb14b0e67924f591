"""Loss semantics: pad targets are invisible, smoothing and perplexity math, domain BCE; the
fast loss against the plain ``nn.CrossEntropyLoss`` reference on real Multi30k batches."""

from __future__ import annotations

import math
from pathlib import Path

import datasets
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import needs_cpu_bf16
from translate.config import ModelConfig, TaggerConfig, TokenizerConfig
from translate.data.batching import BatchSampler, collate, encode_split
from translate.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from translate.model import build_model
from translate.training.loss import (
    LossOutput,
    TranslationLoss,
    batch_losses,
    domain_loss,
    pos_weight_from_counts,
    reference_loss,
)

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


# ------------------------------------------------------------ fast loss vs plain reference


@pytest.fixture(scope="module")
def real_batches(multi30k: Path, tmp_path_factory):
    """Real Multi30k pairs through the real tokenizer, collated as training collates them,
    and a tiny model trained a few steps so that its logits are peaked like a real model's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest on a busy 2-core machine
    torch.manual_seed(0)
    de = (multi30k / "train.de").read_text(encoding="utf-8").splitlines()[:2000]
    en = (multi30k / "train.en").read_text(encoding="utf-8").splitlines()[:2000]
    tok = Tokenizer.train(TokenizerConfig(vocab_size=1000), de, en,
                          tmp_path_factory.mktemp("tok"), log=lambda _: None)
    split = encode_split(datasets.Dataset.from_dict({"src": de, "tgt": en}), tok, [], 64)
    sampler = BatchSampler(split.src_lens, split.tgt_lens, "tokens", max_tokens=800, seed=1)
    batches = [collate(split, ix, PAD_ID, BOS_ID, EOS_ID) for ix in sampler.batches(0)[:10]]
    cfg = ModelConfig(emb_dim=32, enc_hidden=32, enc_layers=1, dec_hidden=64, dec_layers=1,
                      dropout=0.0, input_feeding=False, tagger=TaggerConfig(enabled=False))
    model = build_model(cfg, tok.src_vocab_size, tok.tgt_vocab_size, PAD_ID, 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = TranslationLoss(PAD_ID, 0.1)
    for batch in batches[2:]:
        trans, _ = batch_losses(model, batch, loss_fn, None)
        opt.zero_grad()
        (trans.loss / trans.ntokens).backward()
        opt.step()
    yield model.eval(), batches[:2]
    torch.set_num_threads(threads)


def _logits(model, batch) -> torch.Tensor:
    """``[B, T, V]`` logits of a real batch as a fresh leaf (pad positions included)."""
    out = model(batch.src, batch.src_lengths, batch.tgt_in, batch.src_mask)
    return out.logits.detach().requires_grad_()


def _both(logits: torch.Tensor, batch, eps: float):
    """(reference, fast over [B, T, V], fast over the packed real rows) with logit gradients."""
    results = []
    for run in ("reference", "padded", "packed"):
        leaf = logits.detach().clone().requires_grad_()
        if run == "reference":
            out = reference_loss(leaf, batch.tgt_out, PAD_ID, eps)
        elif run == "padded":
            out = TranslationLoss(PAD_ID, eps)(leaf, batch.tgt_out)
        else:
            out = TranslationLoss(PAD_ID, eps)(leaf[batch.tgt_mask],
                                              batch.tgt_out[batch.tgt_mask])
        out.loss.backward()
        results.append((out, leaf.grad))
    return results


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_fast_loss_equals_cross_entropy_reference_on_real_batches(real_batches, eps):
    """fp32: the same sums of the same float32 log-probs, in another order. Each sum has
    ~1000 terms of size ~1-10, so reordering moves it by a few float32 ulps of the total
    (relative 1e-6); rtol 1e-5 leaves room. A gradient entry is ``softmax - target`` (at most
    1 in size) computed by two formulas: equal to ~1e-7, atol 1e-6."""
    model, batches = real_batches
    for batch in batches:
        with torch.no_grad():
            logits = _logits(model, batch)
        (ref, g_ref), *fast = _both(logits, batch, eps)
        assert ref.ntokens == batch.ntokens > 300
        assert 1.0 < ref.nll.item() / ref.ntokens < math.log(logits.size(-1))  # trained a bit
        for out, grad in fast:
            assert out.ntokens == ref.ntokens
            torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=0)
            torch.testing.assert_close(out.nll, ref.nll, rtol=1e-5, atol=0)
            torch.testing.assert_close(grad, g_ref, rtol=0, atol=1e-6)
            assert torch.all(grad[~batch.tgt_mask] == 0)


def test_training_forward_pass_equals_the_reference_on_real_batches(real_batches):
    """``batch_losses`` (generator over the packed real positions only) against the textbook
    pipeline: full ``[B, T, V]`` logits into the reference loss, down to the weight gradients."""
    model, batches = real_batches
    batch = batches[0]
    loss_fn = TranslationLoss(PAD_ID, 0.1)
    grads = []
    for fast in (True, False):
        model.zero_grad(set_to_none=True)
        if fast:
            loss, _ = batch_losses(model, batch, loss_fn, None)
        else:
            logits = model(batch.src, batch.src_lengths, batch.tgt_in, batch.src_mask).logits
            loss = reference_loss(logits, batch.tgt_out, PAD_ID, 0.1)
        loss.loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for fast, ref in zip(*grads, strict=True):
        # Weight gradients sum over all rows: float32 reordering, scaled by their size.
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


@needs_cpu_bf16
def test_fast_loss_equals_reference_under_bf16_autocast(real_batches):
    """CPU bf16 autocast, as bf16 training runs: the model's logits come out in bf16 and both
    losses score them in float32 (the fast loss and the reference both upcast first), so the
    loss values agree as tightly as in fp32. The gradient goes back to bf16 logits: two fp32
    gradients within ~1e-7 of each other round to the same bf16 value except near a rounding
    boundary, where they land on neighbouring values one bf16 ulp apart (at most 2^-7 of the
    value, so rtol 2^-6 holds either way); such entries must stay rare. Where ``softmax``
    and ``ε/V`` nearly cancel, the fp32 gradients themselves differ by up to ~1e-7
    absolute, as in fp32: atol 1e-6."""
    model, batches = real_batches
    for batch in batches:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            logits = _logits(model, batch)
        assert logits.dtype == torch.bfloat16
        with torch.autocast("cpu", dtype=torch.bfloat16):
            (ref, g_ref), *fast = _both(logits, batch, 0.1)
        assert ref.loss.dtype == torch.float32 and g_ref.dtype == torch.bfloat16
        for out, grad in fast:
            assert out.loss.dtype == torch.float32
            torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=0)
            torch.testing.assert_close(out.nll, ref.nll, rtol=1e-5, atol=0)
            torch.testing.assert_close(grad.float(), g_ref.float(), rtol=2**-6, atol=1e-6)
            assert (grad != g_ref).float().mean().item() < 1e-3


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
