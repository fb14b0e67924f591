"""Dropout whose CPU masks come from 15-bit random integers instead of ``bernoulli_``.

Why: on CPU, ``nn.Dropout`` draws one Mersenne-Twister float per element, and a training step
of the reference model draws millions of them, a visible share of the step (docs/benchmarks.md).
Here one 64-bit draw gives four 15-bit uniforms (``random_`` on int64 yields 63 random bits,
so each 16-bit chunk is masked to its low 15 bits), compared against ``round(p · 2¹⁵)``. The
drop probability is rounded to a multiple of 2⁻¹⁵ (0.3 → 0.300018), and the kept units are
scaled by the exact inverse of the kept fraction, so the expectation is unchanged. On other
devices the masks come from ``torch.nn.functional.dropout``, which is already fast there.

``fast=False`` (config ``model.fast_dropout: false``) is the plain path: :class:`Dropout`
is then exactly ``nn.Dropout``, and :func:`dropout_mask` is ``F.dropout`` of ones. The tests
compare the fast masks against it (drop rate, scaling, identity when dropout is off).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_LEVELS = 1 << 15


def dropout_mask(shape: tuple[int, ...], p: float, like: Tensor, fast: bool = True) -> Tensor:
    """Inverted-dropout mask of ``shape``: 0 with probability ~p, else ``1 / (1 - p)``."""
    if not fast or like.device.type != "cpu":
        return nn.functional.dropout(like.new_ones(shape), p, True)
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_()
    bits = words.view(torch.int16)[:n].view(shape).bitwise_and_(_LEVELS - 1)
    threshold = min(round(p * _LEVELS), _LEVELS - 1)
    return (bits >= threshold).to(like.dtype).mul_(_LEVELS / (_LEVELS - threshold))


class Dropout(nn.Dropout):
    """Drop-in ``nn.Dropout`` (same ``p``, no parameters) with :func:`dropout_mask`."""

    def __init__(self, p: float = 0.5, fast: bool = True) -> None:
        super().__init__(p)
        self.fast = fast

    def forward(self, x: Tensor) -> Tensor:
        if not self.fast:
            return super().forward(x)
        if not self.training or self.p == 0.0:
            return x
        return x * dropout_mask(tuple(x.shape), self.p, x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fast={self.fast}"
