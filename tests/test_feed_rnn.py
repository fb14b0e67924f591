"""The decoder's fast recurrences equal the plain ``nn.LSTM`` loop, values and gradients.

Three ways run the input-feeding recurrence in teacher forcing: the fused autograd node
(:class:`FeedRecurrence`, fp32 Luong attention), the hand-written cell loop (autocast or MLP
attention) and the plain reference (``model.fused_decoder_rnn: false``: the ``nn.LSTM``
called step by step). The fast two are held to the plain one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from translate.model.decoder import Decoder
from translate.model.feed_rnn import FeedRecurrence

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _decoder(kind: str, layers: int, dropout: float = 0.0,
             fast_dropout: bool = True) -> tuple[Decoder, int]:
    torch.manual_seed(layers)
    enc_dim = 16 if kind == "dot" else 12
    dec = Decoder(nn.Embedding(30, 8), 16, layers, enc_dim, kind, True, dropout,
                  fast_dropout=fast_dropout).double()
    return dec, enc_dim


def _inputs(enc_dim: int, layers: int):
    g = torch.Generator().manual_seed(7)
    batch, src_len, steps = 4, 5, 6
    keys = torch.randn(batch, src_len, enc_dim, generator=g, dtype=torch.double)
    h = torch.randn(layers, batch, 16, generator=g, dtype=torch.double)
    c = torch.randn(layers, batch, 16, generator=g, dtype=torch.double)
    mask = torch.ones(batch, src_len, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2, 1:] = False  # a single real source token
    tgt = torch.randint(0, 30, (batch, steps), generator=g)
    return [t.requires_grad_() for t in (keys, h, c)], mask, tgt


def _run(dec: Decoder, path: str, keys, h, c, mask, tgt):
    """Teacher forcing through ``path``: "fused", "cell" (hand-written loop) or "plain"."""
    dec.fused_rnn = path != "plain"
    dec._fusable = lambda _keys: path == "fused"  # instance attribute shadows the method
    vecs, attn = dec(tgt, dec.init_state(h, c), keys, mask, dec.attention.precompute(keys))
    del dec._fusable
    dec.fused_rnn = True
    return vecs, attn


def _outputs_and_grads(dec: Decoder, path: str, keys, h, c, mask, tgt):
    vecs, attn = _run(dec, path, keys, h, c, mask, tgt)
    g = torch.Generator().manual_seed(3)
    # weight both outputs so every gradient path (attention weights included) is used
    loss = (vecs * torch.randn(vecs.shape, generator=g, dtype=vecs.dtype)).sum() + (
        attn * torch.randn(attn.shape, generator=g, dtype=attn.dtype)).sum()
    wrt = [*dec.parameters(), keys, h, c]
    return vecs, attn, torch.autograd.grad(loss, wrt, allow_unused=True)


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("kind", ["dot", "general", "mlp"])
def test_fast_recurrences_match_the_plain_lstm_loop(kind: str, layers: int) -> None:
    """Float64, dropout off (training mode, so gradients flow as in training): the paths
    differ only in how the same products are grouped, so they agree to ~1e-15; the
    tolerances leave three orders of magnitude for accumulated rounding."""
    dec, enc_dim = _decoder(kind, layers)
    (keys, h, c), mask, tgt = _inputs(enc_dim, layers)
    v0, a0, g0 = _outputs_and_grads(dec, "plain", keys, h, c, mask, tgt)
    assert torch.all(a0[1, :, 3:] == 0) and torch.all(a0[2, :, 1:] == 0)
    fast = ["cell"] if kind == "mlp" else ["cell", "fused"]  # fused: Luong scores only
    for path in fast:
        v1, a1, g1 = _outputs_and_grads(dec, path, keys, h, c, mask, tgt)
        torch.testing.assert_close(v1, v0, atol=1e-12, rtol=0)
        torch.testing.assert_close(a1, a0, atol=1e-12, rtol=0)
        for ref, got in zip(g0, g1, strict=True):
            assert (ref is None) == (got is None)
            if ref is not None:
                torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kind", ["general", "mlp"])
def test_fused_step_matches_the_plain_lstm_step(kind: str) -> None:
    """Search's step API: the cached-weight cell against ``nn.LSTM`` on one step."""
    dec, enc_dim = _decoder(kind, 2)
    dec.eval()
    (keys, h, c), mask, _ = _inputs(enc_dim, 2)
    tokens = torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        pk = dec.attention.precompute(keys)
        state = dec.init_state(h, c)
        results = []
        for fused in (True, False):
            dec.fused_rnn = fused
            s, outs = state, []
            for _ in range(3):
                vec, s, weights = dec.step(tokens, s, keys, mask, pk)
                outs += [vec, weights, s.h, s.c, s.input_feed]
            results.append(outs)
    for got, ref in zip(*results, strict=True):
        torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)


def test_fused_backward_passes_gradcheck_with_dropout_masks() -> None:
    """Finite differences against the hand-written backward, dropout masks included."""
    g = torch.Generator().manual_seed(11)
    steps, batch, hid, src_len, dk, layers = 3, 2, 4, 3, 5, 2

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.double).requires_grad_()

    pre0 = rnd(steps, batch, 4 * hid)
    h0, c0, feed0 = rnd(layers, batch, hid), rnd(layers, batch, hid), rnd(batch, hid)
    score_keys, values = rnd(batch, src_len, hid), rnd(batch, src_len, dk)
    pad = torch.tensor([[False, False, True], [False, False, False]])
    w_comb = rnd(hid, dk + hid)
    keep = 1 / 0.7
    drop_mid = (torch.rand(layers - 1, steps, batch, hid, generator=g) > 0.3).double() * keep
    drop_out = (torch.rand(steps, batch, hid, generator=g) > 0.3).double() * keep
    weights = [rnd(4 * hid, 2 * hid), rnd(4 * hid, 2 * hid), rnd(4 * hid)]

    def f(*args):
        return FeedRecurrence.apply(*args[:8], drop_mid, drop_out, *args[8:])

    assert torch.autograd.gradcheck(
        f, (pre0, h0, c0, feed0, score_keys, values, pad, w_comb, *weights), atol=1e-6
    )


@pytest.mark.parametrize("fast_dropout", [True, False])
def test_training_mode_applies_output_dropout(fast_dropout: bool) -> None:
    dec, enc_dim = _decoder("general", 2, dropout=0.5, fast_dropout=fast_dropout)
    dec.train()
    (keys, h, c), mask, tgt = _inputs(enc_dim, 2)
    vecs, _ = dec(tgt, dec.init_state(h, c), keys, mask, None)
    zeros = (vecs == 0).double().mean().item()
    assert 0.3 < zeros < 0.7  # about half the units dropped
    vecs.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in dec.parameters() if p.grad is not None)


def test_cached_step_weights_follow_parameter_updates() -> None:
    dec, enc_dim = _decoder("general", 2)
    dec.eval()
    (keys, h, c), mask, _ = _inputs(enc_dim, 2)
    tokens = torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        pk = dec.attention.precompute(keys)
        before, _, _ = dec.step(tokens, dec.init_state(h, c), keys, mask, pk)
        dec.rnn.weight_hh_l1.mul_(0.5)  # in place, as an optimiser step would
        after, _, _ = dec.step(tokens, dec.init_state(h, c), keys, mask, pk)
        dec._step_cache = None
        fresh, _, _ = dec.step(tokens, dec.init_state(h, c), keys, mask, pk)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, fresh, atol=0, rtol=0)


def test_cached_step_weights_are_kept_per_autocast_dtype() -> None:
    """Search under bf16 autocast caches bf16 step weights (cast once, not every step); an
    fp32 search afterwards must not reuse them."""
    dec, enc_dim = _decoder("general", 2)
    dec = dec.float().eval()
    (keys, h, c), mask, _ = _inputs(enc_dim, 2)
    keys, h, c = (t.detach().float() for t in (keys, h, c))
    tokens = torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        pk = dec.attention.precompute(keys)
        fp32, _, _ = dec.step(tokens, dec.init_state(h, c), keys, mask, pk)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, _, _ = dec.step(tokens, dec.init_state(h, c), keys, mask, pk)
            assert all(w.dtype == torch.bfloat16 for w, _, _ in dec._step_cache[1])
        again, _, _ = dec.step(tokens, dec.init_state(h, c), keys, mask, pk)
    assert bf16.dtype == torch.bfloat16 and not torch.equal(bf16.float(), fp32)
    torch.testing.assert_close(bf16.float(), fp32, atol=3e-2, rtol=0)
    torch.testing.assert_close(again, fp32, atol=0, rtol=0)


@pytest.mark.parametrize("layers", [1, 2])
def test_cpu_bf16_autocast_takes_the_plain_loop_and_agrees_with_fp32(layers: int) -> None:
    """Under bf16 autocast teacher forcing runs the plain loop with bf16 products (the fused
    node is fp32 only) and must agree with the fused fp32 path, values and gradients.

    The gap is bf16 rounding (relative 2^-9 per product input, compounding over 6 steps,
    gradients of the per-batch weight casts summed in bf16): measured at most 0.94% of each
    tensor's largest magnitude (1-3 layers), so 3% is the bound; a wrong gradient is off by
    far more."""
    dec, enc_dim = _decoder("general", layers, dropout=0.0)
    dec = dec.float()
    (keys, h, c), mask, tgt = _inputs(enc_dim, layers)
    keys, h, c = (t.detach().float().requires_grad_() for t in (keys, h, c))
    results = []
    for bf16 in (False, True):
        dec.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            assert dec._fusable(keys) != bf16
            vecs, attn = dec(tgt, dec.init_state(h, c), keys, mask,
                             dec.attention.precompute(keys))
        assert vecs.dtype == (torch.bfloat16 if bf16 else torch.float32)
        (vecs.float().sum() + attn.float().pow(2).sum()).backward()
        results.append([vecs.float(), attn.float()]
                       + [p.grad.clone() for p in dec.parameters() if p.grad is not None])
    gaps = [float((b - a).abs().max() / a.abs().max()) for a, b in
            zip(*([t.detach() for t in r] for r in results), strict=True)]
    assert len(gaps) > 2 and max(gaps) <= 3e-2, gaps


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_recurrence_on_cuda_matches_the_cpu() -> None:
    """fp32 on CUDA (no autocast) takes the fused path too; it must agree with the CPU."""
    dec, enc_dim = _decoder("general", 2)
    dec = dec.float()
    (keys, h, c), mask, tgt = _inputs(enc_dim, 2)
    results = []
    for device in ("cpu", "cuda"):
        model = dec.to(device)
        args = [t.detach().float().to(device).requires_grad_() for t in (keys, h, c)]
        assert model._fusable(args[0])
        vecs, attn = _run(model, "fused", *args, mask.to(device), tgt.to(device))
        (vecs.sum() + attn.pow(2).sum()).backward()
        results.append([vecs, attn] + [p.grad for p in model.parameters() if p.grad is not None]
                       + [a.grad for a in args])
        model.zero_grad(set_to_none=True)
    for cpu, gpu in zip(*results, strict=True):
        torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-4, rtol=2e-3)
