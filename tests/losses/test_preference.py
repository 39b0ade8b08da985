"""DPO and Bradley-Terry losses, by hand."""

import math

import pytest
import torch

from mmr1.losses.preference import bradley_terry_loss, dpo_loss


def test_dpo_by_hand():
    loss, margin = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]),
                            beta=0.5)
    # margin = 0.5 * ((-1 + 2) - (-3 + 2)) = 1.0 ; loss = -log σ(1)
    assert float(margin) == pytest.approx(1.0)
    assert float(loss) == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))


def test_bradley_terry_prefers_chosen():
    assert float(bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0]))) == pytest.approx(
        math.log(1 + math.exp(-2.0)))
