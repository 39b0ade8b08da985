"""PPO maths, as plain functions: GAE, KL-penalised rewards, the clipped policy and value losses.

Shapes: N sequences, L completion tokens, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each sequence's real tokens.

    rewards, values, mask [N, L] (values V(s_t); the value after the last real token is 0) ->
    advantages [N, L] and returns [N, L] (= advantages + values), zero on padding."""
    mask = mask.float()
    N, L = rewards.shape
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(N, dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros(N, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(L)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        running = running * mask[:, t]  # padding carries nothing back
        advantages[:, t] = running
        next_value = values[:, t] * mask[:, t]
    return advantages, (advantages + values) * mask


def kl_penalised_rewards(score: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                         mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards [N, L]: -kl_coef·(log π - log π_ref) on every token, plus the
    sequence's score [N] on its last real token (InstructGPT-style PPO)."""
    mask = mask.float()
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask  # [N, L]
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)  # [N]
    return rewards.scatter_add(1, last[:, None], score[:, None].to(rewards.dtype))


@dataclass
class PPOLoss:
    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    clip_fraction: torch.Tensor


def ppo_loss(logprobs, old_logprobs, advantages, values, old_values, returns, mask, entropy,
             clip_eps: float = 0.2, value_clip: float = 0.2, value_coef: float = 0.5,
             entropy_coef: float = 0.01) -> PPOLoss:
    """Clipped policy loss + clipped value loss - entropy bonus, token means over the mask.

    All inputs [N, L]; `entropy` is the policy's per-token entropy."""
    mask = mask.float()

    def mean(x: torch.Tensor) -> torch.Tensor:
        return (x * mask).sum() / mask.sum().clamp(min=1)

    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
    policy_loss = mean(-torch.minimum(unclipped, clipped))
    values_clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
    value_loss = 0.5 * mean(torch.maximum((values - returns) ** 2, (values_clipped - returns) ** 2))
    entropy_mean = mean(entropy)
    with torch.no_grad():
        clip_fraction = mean(((unclipped - clipped).abs() > 0).float())
    return PPOLoss(policy_loss + value_coef * value_loss - entropy_coef * entropy_mean,
                   policy_loss.detach(), value_loss.detach(), entropy_mean.detach(), clip_fraction)
