"""DPO, reward model, GAE, PPO and distillation maths against hand-computed values."""

import math

import pytest
import torch

from mmr1.rl.losses import (bradley_terry_loss, distillation_loss, dpo_loss, gae, kl_penalised_rewards,
                            ppo_loss)


def test_dpo_by_hand():
    loss, margin = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]),
                            beta=0.5)
    # margin = 0.5 * ((-1 + 2) - (-3 + 2)) = 1.0 ; loss = -log σ(1)
    assert float(margin) == pytest.approx(1.0)
    assert float(loss) == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))


def test_bradley_terry_prefers_chosen():
    assert float(bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0]))) == pytest.approx(
        math.log(1 + math.exp(-2.0)))


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7, 9.0]])
    mask = torch.tensor([[True, True, True, False]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    d2 = 1.0 - 0.7  # last real token: no next value
    d1 = 0.0 + 0.9 * 0.7 - 0.6
    d0 = 0.0 + 0.9 * 0.6 - 0.5
    a2 = d2
    a1 = d1 + 0.9 * 0.8 * a2
    a0 = d0 + 0.9 * 0.8 * a1
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 0.5, a1 + 0.6, a2 + 0.7, 0.0]]))


def test_kl_penalised_rewards_put_the_score_on_the_last_token():
    lp, ref = torch.tensor([[-1.0, -1.0, -1.0]]), torch.tensor([[-1.5, -1.0, -2.0]])
    mask = torch.tensor([[True, True, False]])
    r = kl_penalised_rewards(torch.tensor([2.0]), lp, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(r, torch.tensor([[-0.05, 2.0, 0.0]]))


def test_ppo_clipping_and_value_loss():
    z = torch.zeros(1, 2)
    mask = torch.ones(1, 2, dtype=torch.bool)
    lp = torch.tensor([[0.5, 0.0]], requires_grad=True)  # ratio e^0.5 > 1.2 on token 0
    out = ppo_loss(lp, z, torch.ones(1, 2), torch.tensor([[1.0, 1.0]]), z, torch.tensor([[0.0, 1.0]]), mask, z,
                   value_coef=1.0, entropy_coef=0.0)
    out.loss.backward()
    assert lp.grad[0, 0] == 0 and lp.grad[0, 1] < 0  # clipped token gets no gradient
    # value clipped to old ± 0.2 = 0.2: token 0 max((1-0)^2, (0.2-0)^2)=1, token 1 max(0, (0.2-1)^2)=0.64
    assert float(out.value_loss) == pytest.approx(0.5 * (1.0 + 0.64) / 2)
    assert float(out.clip_fraction) == pytest.approx(0.5)


def test_distillation_matches_teacher_and_labels():
    labels = torch.tensor([[1, -100]])
    teacher = torch.tensor([[[0.0, 2.0, 0.0], [5.0, 0.0, 0.0]]])
    same = distillation_loss(teacher.clone(), teacher, labels, temperature=2.0, alpha=1.0)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(1, 2, 3, requires_grad=True)
    loss = distillation_loss(student, teacher, labels, temperature=1.0, alpha=0.0)
    assert loss.item() == pytest.approx(math.log(3))  # uniform student, hard label only
    with pytest.raises(ValueError, match="share the vocabulary"):
        distillation_loss(torch.zeros(1, 2, 4), teacher, labels)
