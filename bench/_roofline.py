"""The matrix multiplies of one training step, timed alone: how fast could a step be if it were
nothing but its GEMMs?

Why: ``python -m bench train`` compares the achieved rate (analytic FLOPs / step time) with
the 2048³ GEMM peak. That peak is one large square product; the model's products are not.
The output projection has an inner dimension of 256, the recurrent products have as many rows
as the batch has sentences (~100-200), and a step has T of them per layer, one after another.
Timing exactly those shapes with ``torch.mm`` and nothing else gives the rate this
architecture's GEMMs can reach on this machine, an upper bound for the whole step (which also
runs the LSTM gate nonlinearities, softmaxes, the loss, dropout and Adam). If that bound is
below a target, no kernel work on the rest of the step can reach it.

Shapes, per batch of B sentences, source / target lengths padded to S / T, and N_s / N_t real
tokens (forward ``[m, k] x [k, n]``; backward adds ``[m, n] x [n, k]`` for the input gradient
and ``[n, m] x [m, k]`` for the weight gradient):

- each encoder layer and direction: input projection ``[N_s, I] x [I, 4He]``; S recurrent
  products ``[B, He] x [He, 4He]`` and S ``[B, 4He] x [4He, He]`` back; ``dW_hh`` over N_s rows;
- the key projection of general attention ``[N_s, 2He] x [2He, Hd]``;
- parallel decoder: as the encoder, one direction, Hd units, T steps, over N_t rows;
- input-feeding decoder: layer 0's embedding part over N_t rows; per step and layer
  ``[B, I + Hd] x [I + Hd, 4Hd]`` (layer 0's I is the input feed) and its input gradient;
  one weight gradient per layer over N_t rows; the combine ``[B, 2He + Hd] x [.., Hd]`` per
  step and its input gradient (its weight gradient over N_t rows);
- parallel decoder's combine over N_t rows, the tied projection ``[N_t, Hd] x [Hd, E]`` and
  the output projection ``[N_t, E or Hd] x [.., V]``.

Attention scores and contexts (batched products of size S) are left out: they are a few
percent of the FLOPs and not GEMMs of the kind the peak measures.

Besides the GEMMs, two parts of every step are memory-bound work no kernel choice removes:
the loss (one log-softmax over ``[N_t, V]`` and its gradient, already one fused pass in
:class:`translate.training.loss.TranslationLoss`) and the optimiser update (fused AdamW over every
parameter). :func:`time_floor` times the project's own code for them on tensors of the
step's sizes. GEMMs + floor is still an optimistic step: it leaves out the LSTM gate
nonlinearities, dropout, embeddings, attention and gradient clipping.
"""

from __future__ import annotations

from collections import Counter

import torch

from bench._common import best_seconds

Shape = tuple[int, int, int]  # (m, k, n) of one [m, k] x [k, n] product


def _linear(shapes: Counter, m: int, k: int, n: int, times: int = 1) -> None:
    """Forward, input gradient and weight gradient of ``[m, k] x [k, n]``."""
    shapes[(m, k, n)] += times
    shapes[(m, n, k)] += times
    shapes[(n, m, k)] += times


def _recurrence(shapes: Counter, batch: int, steps: int, rec_in: int, four_h: int) -> None:
    """``steps`` sequential products ``[B, rec_in] x [rec_in, 4H]`` and their input gradients."""
    shapes[(batch, rec_in, four_h)] += steps
    shapes[(batch, four_h, rec_in)] += steps


def step_gemms(model_cfg, vocab: int, src_lens: list[int], tgt_lens: list[int]) -> Counter:
    """The GEMM shapes (with counts) of one training step on one batch, by the module docstring."""
    e, he, hd = model_cfg.emb_dim, model_cfg.enc_hidden, model_cfg.dec_hidden
    batch, n_src, n_tgt = len(src_lens), sum(src_lens), sum(tgt_lens)
    s_max, t_max = max(src_lens), max(tgt_lens)
    shapes: Counter = Counter()
    for layer in range(model_cfg.enc_layers):
        inp = e if layer == 0 else 2 * he
        for _ in range(2):
            _linear(shapes, n_src, inp, 4 * he)
            _recurrence(shapes, batch, s_max, he, 4 * he)
            shapes[(4 * he, n_src, he)] += 1  # dW_hh
    if model_cfg.attention != "dot":
        _linear(shapes, n_src, 2 * he, hd)
    if model_cfg.input_feeding:
        _linear(shapes, n_tgt, e, 4 * hd)  # layer 0, embedding columns, all steps at once
        for _ in range(model_cfg.dec_layers):
            _recurrence(shapes, batch, t_max, 2 * hd, 4 * hd)  # [x or feed; h]
            shapes[(4 * hd, n_tgt, 2 * hd)] += 1  # dW over all steps
        shapes[(batch, 2 * he + hd, hd)] += t_max  # combine, per step
        shapes[(batch, hd, 2 * he + hd)] += t_max
        shapes[(hd, n_tgt, 2 * he + hd)] += 1
    else:
        for layer in range(model_cfg.dec_layers):
            _linear(shapes, n_tgt, e if layer == 0 else hd, 4 * hd)
            _recurrence(shapes, batch, t_max, hd, 4 * hd)
            shapes[(4 * hd, n_tgt, hd)] += 1
        _linear(shapes, n_tgt, 2 * he + hd, hd)
    if model_cfg.tie_output and hd != e:
        _linear(shapes, n_tgt, hd, e)
        _linear(shapes, n_tgt, e, vocab)
    else:
        _linear(shapes, n_tgt, hd, vocab)
    return shapes


def gemm_flops(shapes: Counter) -> float:
    return float(sum(2 * m * k * n * count for (m, k, n), count in shapes.items()))


def _time_mm(shape: Shape, device: torch.device, reps: int) -> float:
    """Best-of-``reps`` seconds of one ``torch.mm`` of ``shape`` into a preallocated output."""
    m, k, n = shape
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    out = torch.empty(m, n, device=device)
    return best_seconds(lambda: torch.mm(a, b, out=out), device, reps)


def time_floor(vocab: int, tgt_tokens: list[int], param_sizes: list[int],
               device: torch.device, reps: int = 3) -> float:
    """Seconds of the loss (forward + backward, ``[n, vocab]`` for each ``n`` in
    ``tgt_tokens``) and one fused AdamW step per batch over parameters of ``param_sizes``."""
    from translate.training.loss import TranslationLoss

    loss_fn = TranslationLoss(pad_id=0, label_smoothing=0.1)
    total = 0.0
    for n in tgt_tokens:
        logits = torch.randn(n, vocab, device=device, requires_grad=True)
        targets = torch.randint(1, vocab, (n,), device=device)
        total += best_seconds(lambda: loss_fn(logits, targets).loss.backward(),  # noqa: B023
                              device, reps)
    params = [torch.nn.Parameter(torch.randn(size, device=device)) for size in param_sizes]
    for param in params:
        param.grad = torch.randn_like(param)
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True)
    return total + best_seconds(opt.step, device, reps) * len(tgt_tokens)


def time_gemms(shapes: Counter, device: torch.device, reps: int = 3) -> float:
    """Seconds the products in ``shapes`` take run one by one, each at its best-of-``reps``."""
    return sum(_time_mm(shape, device, reps) * count for shape, count in shapes.items())
