"""Next-token and masked-token cross-entropy."""

import torch
import torch.nn.functional as F

from mmr1.losses.language import mlm_loss, sft_loss
from mmr1.losses.masked import masked_regression_loss


def test_sft_loss_is_shifted_next_token_ce():
    torch.manual_seed(3)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, -100, 4, 5, 6], [-100, 7, 8, -100, -100]])
    rows = [(0, 1, 4), (0, 2, 5), (0, 3, 6), (1, 0, 7), (1, 1, 8)]  # (row, position predicting, target)
    want = torch.stack([F.cross_entropy(logits[r, t], torch.tensor(y)) for r, t, y in rows]).mean()
    torch.testing.assert_close(sft_loss(logits, labels), want)


def test_sft_loss_ignores_prompt_tokens():
    torch.manual_seed(4)
    logits = torch.randn(1, 6, 11)
    labels = torch.tensor([[-100, -100, -100, 3, 4, 2]])
    changed = logits.clone()
    changed[0, 0, 3] += 5.0  # predicts a prompt token (labels[1] = -100)
    changed[0, 1, 4] -= 3.0
    changed[0, 5, 2] += 7.0  # the last position predicts nothing
    assert sft_loss(changed, labels) == sft_loss(logits, labels)
    changed[0, 2, 3] += 1.0  # predicts the first response token
    assert sft_loss(changed, labels) != sft_loss(logits, labels)


def test_losses_with_no_targets_are_zero_with_grad():
    logits = torch.randn(2, 4, 7, requires_grad=True)
    loss = sft_loss(logits, torch.full((2, 4), -100))
    loss.backward()
    assert loss == 0 and logits.grad is not None
    assert masked_regression_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool)) == 0


def test_mlm_loss_scores_masked_positions_without_shift():
    logits = torch.full((1, 3, 5), -10.0)
    logits[0, 1, 4] = 10.0
    assert mlm_loss(logits, torch.tensor([[-100, 4, -100]])) < 1e-6
    assert mlm_loss(logits, torch.tensor([[-100, 3, -100]])) > 10
