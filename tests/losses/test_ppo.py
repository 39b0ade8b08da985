"""GAE and PPO maths against hand-computed values."""

import pytest
import torch

from mmr1.losses.ppo import gae, kl_penalised_rewards, ppo_loss


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
