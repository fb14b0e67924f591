"""The benchmark's GEMM roofline counts the same products as its analytic FLOP formula.

``bench/_roofline.py`` lists the matrix-multiply shapes of a training step shape by shape;
``bench/train.py`` has the closed formula per token. They were written separately, so
agreement (up to the attention products, which only the formula counts) checks both.
"""

from __future__ import annotations

import pytest
import torch

from bench._roofline import gemm_flops, step_gemms, time_floor, time_gemms
from bench.train import flops
from translate.config import ModelConfig


@pytest.mark.parametrize("input_feeding", [True, False])
@pytest.mark.parametrize("tie_output", [True, False])
def test_gemm_list_matches_the_analytic_formula(input_feeding: bool, tie_output: bool) -> None:
    cfg = ModelConfig(input_feeding=input_feeding, tie_output=tie_output, emb_dim=128)
    vocab, batch, length = 1000, 7, 9  # equal lengths: no padding in the recurrences
    lens = [length] * batch
    he, hd = cfg.enc_hidden, cfg.dec_hidden
    attention = 3 * batch * length * (2 * length * hd + 2 * length * 2 * he)
    analytic = flops(cfg, vocab, lens, lens)
    assert gemm_flops(step_gemms(cfg, vocab, lens, lens)) == pytest.approx(analytic - attention)


def test_recurrence_is_counted_over_padded_steps() -> None:
    """The recurrent products run over the longest sentence for every row (as the fused RNN
    kernels do), the input projections over real tokens only."""
    cfg = ModelConfig(input_feeding=False)
    short = step_gemms(cfg, 500, [3, 3], [4, 4])
    padded = step_gemms(cfg, 500, [3, 6], [4, 4])
    assert padded[(2, cfg.enc_hidden, 4 * cfg.enc_hidden)] == 2 * short[
        (2, cfg.enc_hidden, 4 * cfg.enc_hidden)]
    assert (9, cfg.emb_dim, 4 * cfg.enc_hidden) in padded  # 3 + 6 real source tokens


@pytest.mark.host_dependent  # timing
def test_timers_measure_real_work() -> None:
    """Larger products and losses take longer: the timers run what they are given.

    On one thread: with two on a busy 2-core host, every product waits for the second
    thread to be scheduled, and a 32³ product took as long as a 512³ one."""
    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert time_gemms({(512, 512, 512): 1}, cpu) > time_gemms({(32, 32, 32): 1}, cpu) > 0
        four_big = time_floor(2000, [2000] * 4, [10_000], cpu)
        assert four_big > time_floor(2000, [50], [10_000], cpu)
    finally:
        torch.set_num_threads(threads)
