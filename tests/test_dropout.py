"""The fast CPU dropout drops the configured fraction, keeps the expectation, and is a no-op
in evaluation."""

from __future__ import annotations

import pytest
import torch

from translate.model.dropout import Dropout, dropout_mask


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_mask_drops_p_and_keeps_the_expectation(p: float) -> None:
    torch.manual_seed(0)
    like = torch.empty(0)
    mask = dropout_mask((300, 1001), p, like)  # odd size: the last 64-bit word is partial
    assert mask.shape == (300, 1001) and mask.dtype == torch.float32
    values = mask.unique().tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / (1 - p), rel=1e-3)]
    assert (mask == 0).float().mean().item() == pytest.approx(p, abs=0.005)
    assert mask.mean().item() == pytest.approx(1.0, abs=0.01)


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
