"""The fast CPU dropout drops the configured fraction, keeps the expectation, and is a no-op
in evaluation, like its plain reference ``nn.Dropout`` (``model.fast_dropout: false``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from translate.config import ModelConfig
from translate.model import build_model
from translate.model.dropout import Dropout, dropout_mask


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_mask_drops_p_and_keeps_the_expectation(p: float, fast: bool) -> None:
    """The same statistics for the fast mask and the plain one (``F.dropout`` of ones). 300k
    draws: the drop rate's standard error is at most 0.001, so abs 0.005 is 5 sigma. The
    fast mask's p is rounded to a multiple of 2^-15, which moves the scale 1/(1-p) by at
    most 2^-16/(1-p) relative (1.5e-4 at p = 0.9): rel 1e-3."""
    torch.manual_seed(0)
    like = torch.empty(0)
    mask = dropout_mask((300, 1001), p, like, fast=fast)  # odd size: a partial 64-bit word
    assert mask.shape == (300, 1001) and mask.dtype == torch.float32
    values = mask.unique().tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / (1 - p), rel=1e-3)]
    assert (mask == 0).float().mean().item() == pytest.approx(p, abs=0.005)
    assert mask.mean().item() == pytest.approx(1.0, abs=0.01)


def test_plain_path_is_exactly_nn_dropout() -> None:
    x = torch.randn(64, 33)
    torch.manual_seed(4)
    expected = nn.Dropout(0.3).train()(x)
    torch.manual_seed(4)
    assert torch.equal(Dropout(0.3, fast=False).train()(x), expected)
    torch.manual_seed(4)
    expected_mask = nn.functional.dropout(torch.ones(5, 7), 0.3, True)
    torch.manual_seed(4)
    assert torch.equal(dropout_mask((5, 7), 0.3, x, fast=False), expected_mask)


def test_masks_are_independent_across_positions() -> None:
    """Each 64-bit draw feeds four positions: they must not be correlated."""
    torch.manual_seed(1)
    keep = (dropout_mask((400_000,), 0.5, torch.empty(0)) > 0).float().view(-1, 4)
    corr = torch.corrcoef(keep.t())
    assert (corr - torch.eye(4)).abs().max().item() < 0.01


def test_module_is_identity_in_eval_and_drops_in_training() -> None:
    x = torch.randn(8, 5, 16)
    layer = Dropout(0.4)
    assert layer.state_dict() == {}
    assert torch.equal(layer.eval()(x), x)
    torch.manual_seed(2)
    y = layer.train()(x)
    dropped = y == 0
    assert 0.2 < dropped.float().mean().item() < 0.6
    torch.testing.assert_close(y[~dropped], x[~dropped] / (1 - 0.4), rtol=1e-3, atol=1e-6)
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_with_dropout_off_fast_and_plain_models_are_identical() -> None:
    """Evaluation mode, or p = 0 in training: no mask is drawn, and both choices give the
    same outputs bit for bit (input feeding, two decoder layers: every dropout site)."""
    cfg = dict(emb_dim=8, enc_hidden=8, enc_layers=2, dec_hidden=16, dec_layers=2,
               input_feeding=True)
    src = torch.tensor([[5, 6, 7, 8], [9, 0, 3, 3]])
    lengths, tgt_in = torch.tensor([4, 2]), torch.tensor([[1, 5, 6], [1, 7, 3]])
    for dropout, train in ((0.3, False), (0.0, True)):
        outs = []
        for fast in (True, False):
            torch.manual_seed(0)
            model = build_model(ModelConfig(dropout=dropout, fast_dropout=fast, **cfg),
                                12, 12, 3, 2).train(train)
            out = model(src, lengths, tgt_in)
            outs.append((out.logits, out.domain_logits))
        (a, da), (b, db) = outs
        assert torch.equal(a, b) and torch.equal(da, db)
