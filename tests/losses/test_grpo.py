"""GRPO maths: group-normalised advantages, clipped ratio, k3 KL."""

import math

import pytest
import torch

from mmr1.losses.grpo import group_advantages, grpo_loss


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])  # two prompts, G = 4
    adv, zero_spread = group_advantages(rewards, 4, eps=0.0)
    # group 1: mean 0.5, population std 0.5 -> (+1, -1, -1, +1); group 2: all equal -> 0
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0, -1.0, 1.0, 0.0, 0.0, 0.0, 0.0]))
    assert zero_spread.tolist() == [False, True]
    # Dr. GRPO: no division by the std; the population std, not the sample std (which would give ±0.866)
    torch.testing.assert_close(group_advantages(rewards, 4, scale=False)[0],
                               torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="G=3"):
        group_advantages(rewards, 3)


def test_policy_gradient_direction_and_clipping():
    old = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    mask = torch.tensor([[True, True], [True, False]])
    adv = torch.tensor([1.0, -1.0])
    logprobs = old.clone().requires_grad_(True)
    out = grpo_loss(logprobs, old, None, adv, mask, beta=0.0)
    out.loss.backward()
    # ratio 1: d loss / d logprob = -A / (tokens of the sequence) / N sequences; padding gets nothing
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-0.25, -0.25], [0.5, 0.0]]))
    assert float(out.ratio) == pytest.approx(1.0) and float(out.clip_fraction) == 0.0

    # A positive advantage gains nothing from pushing the ratio past 1 + eps: the clip stops the gradient.
    high = (old + 0.5).clone().requires_grad_(True)
    out = grpo_loss(high, old, None, torch.tensor([1.0, 1.0]), mask, clip_eps=0.2, beta=0.0)
    out.loss.backward()
    assert torch.all(high.grad == 0) and float(out.clip_fraction) == pytest.approx(1.0)


@pytest.mark.parametrize("loss_type, expected_loss, expected_grad", [
    # per-token losses -A at ratio 1: sequence 0 (A = 1, 2 tokens) [-1, -1], sequence 1 (A = 2, 1 token) [-2]
    ("grpo", (-1.0 + -2.0) / 2, [[-1 / (2 * 2), -1 / (2 * 2)], [-2 / (1 * 2), 0.0]]),  # mean of sequence means
    ("dr_grpo", -4.0 / (2 * 4), [[-1 / 8, -1 / 8], [-2 / 8, 0.0]]),  # token sum / (N=2 * max_completion_length=4)
    ("dapo", -4.0 / 3, [[-1 / 3, -1 / 3], [-2 / 3, 0.0]]),  # token sum / 3 tokens
])
def test_loss_types_by_hand_and_micro_batches_add_up(loss_type, expected_loss, expected_grad):
    old = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.9]]))
    mask = torch.tensor([[True, True], [True, False]])
    adv = torch.tensor([1.0, 2.0])
    logprobs = old.clone().requires_grad_(True)
    out = grpo_loss(logprobs, old, None, adv, mask, beta=0.0, loss_type=loss_type, max_completion_length=4)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(expected_loss)
    torch.testing.assert_close(logprobs.grad, torch.tensor(expected_grad))
    rollout = dict(loss_type=loss_type, num_sequences=2, num_tokens=3, max_completion_length=4)
    parts = [grpo_loss(old[i:i + 1], old[i:i + 1], None, adv[i:i + 1], mask[i:i + 1], beta=0.0, **rollout).loss
             for i in range(2)]
    assert sum(parts).item() == pytest.approx(expected_loss)


def test_kl_term_is_reduced_like_the_policy_term():
    lp = torch.log(torch.full((2, 2), 0.5))
    ref = torch.log(torch.full((2, 2), 0.25))
    mask = torch.tensor([[True, True], [True, False]])
    k3 = 0.5 - math.log(0.5) - 1  # r/p - log(r/p) - 1 at r/p = 1/2, every token
    for loss_type, reduced in (("grpo", k3), ("dr_grpo", 3 * k3 / (2 * 2)), ("dapo", k3)):
        out = grpo_loss(lp, lp, ref, torch.zeros(2), mask, beta=0.1, loss_type=loss_type)
        assert out.loss.item() == pytest.approx(0.1 * reduced) and float(out.kl) == pytest.approx(k3)
    with pytest.raises(ValueError, match="loss_type: expected one of"):
        grpo_loss(lp, lp, ref, torch.zeros(2), mask, loss_type="bnpo")


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere():
    lp = torch.log(torch.tensor([[0.2, 0.7]]))
    mask = torch.ones(1, 2, dtype=torch.bool)
    assert float(grpo_loss(lp, lp, lp, torch.zeros(1), mask).kl) == 0.0
    ref = torch.log(torch.tensor([[0.4, 0.35]]))
    kl = float(grpo_loss(lp, lp, ref, torch.zeros(1), mask, beta=0.1).kl)
    by_hand = sum(r / p - torch.log(torch.tensor(r / p)).item() - 1 for p, r in ((0.2, 0.4), (0.7, 0.35))) / 2
    assert kl == pytest.approx(float(by_hand), rel=1e-5)
