"""The objectives' maths, without a Trainer."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmr1.objectives.losses import (
    clip_loss, masked_regression_loss, mlm_loss, normalised_patches, recall_at_1, sft_loss,
)


def fake_gather(others: list[torch.Tensor], rank: int):
    """all_gather with grad, seen from one of 2 simulated ranks: call i fills the other rank's slot with others[i]."""
    calls = iter(others)

    def gather(x: torch.Tensor) -> list[torch.Tensor]:
        other = next(calls)
        return [x, other] if rank == 0 else [other, x]
    return gather


def test_gathered_clip_loss_equals_single_process_loss():
    torch.manual_seed(0)
    a = torch.randn(8, 16, requires_grad=True)
    b = torch.randn(8, 16, requires_grad=True)
    scale = torch.tensor(math.log(1 / 0.07))
    single = clip_loss(a, b, scale)
    single_grad = torch.autograd.grad(single, (a, b))

    a_parts, b_parts = a.chunk(2), b.chunk(2)
    losses = []
    for rank in range(2):
        other = [F.normalize(a_parts[1 - rank], dim=-1), F.normalize(b_parts[1 - rank], dim=-1)]  # its features
        losses.append(clip_loss(a_parts[rank], b_parts[rank], scale, rank, 2, gather=fake_gather(other, rank)))
    gathered = torch.stack(losses).mean()
    torch.testing.assert_close(gathered, single)
    for got, want in zip(torch.autograd.grad(gathered, (a, b)), single_grad):
        torch.testing.assert_close(got, want)


def test_gathered_negatives_change_the_loss():
    """Each rank must see the other rank's rows as negatives, not only its own."""
    torch.manual_seed(1)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    scale = torch.tensor(2.0)
    local = clip_loss(a[:2], b[:2], scale)
    other = [F.normalize(a[2:], dim=-1), F.normalize(b[2:], dim=-1)]
    gathered = clip_loss(a[:2], b[:2], scale, 0, 2, gather=fake_gather(other, 0))
    assert not torch.isclose(local, gathered)


def test_clip_loss_is_symmetric_infonce_with_clamped_temperature():
    torch.manual_seed(2)
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    logits = 100.0 * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    want = (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6))) / 2
    torch.testing.assert_close(clip_loss(a, b, torch.tensor(10.0)), want)  # e^10 is clamped to 100


def test_clip_temperature_gets_a_gradient_below_the_clamp():
    scale = torch.tensor(1.0, requires_grad=True)
    clip_loss(torch.randn(4, 8), torch.randn(4, 8), scale).backward()
    assert scale.grad is not None and scale.grad != 0


def test_recall_at_1_counts_own_pairs():
    a = torch.eye(4)
    b = torch.eye(4)[[0, 1, 3, 2]]
    assert recall_at_1(a, a) == (1.0, 1.0)
    assert recall_at_1(a, b) == (0.5, 0.5)


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


def test_masked_regression_averages_masked_items_only():
    pred, target = torch.zeros(1, 3, 2), torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_regression_loss(pred, target, mask) == pytest.approx(5.0)


def test_normalised_patches_order_and_statistics():
    pixels = torch.randn(2, 3, 8, 8)
    patches = normalised_patches(pixels, 4)  # [2, 4, 48]
    assert patches.shape == (2, 4, 48)
    raw = pixels[1, :, 4:8, 0:4].permute(1, 2, 0).reshape(-1)  # third patch, (row, col, channel) order
    torch.testing.assert_close(patches[1, 2], (raw - raw.mean()) / (raw.var() + 1e-6).sqrt())
