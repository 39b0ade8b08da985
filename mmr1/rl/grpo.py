"""GRPO maths (DeepSeekMath / DeepSeek-R1), as plain functions.

Shapes: B prompts, G samples per prompt, N = B*G sequences, L completion tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """(r - mean) / (std + eps) within each prompt's group.

    rewards [B*G] ordered prompt-major (rows b*G … b*G+G-1 share a prompt) ->
    advantages [B*G], and zero_spread [B] (groups whose rewards are all equal: advantage 0).
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards: expected [B*G] with G={group_size}, got {list(rewards.shape)}")
    grouped = rewards.view(-1, group_size).float()  # [B, G]
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True, unbiased=False) if group_size > 1 else torch.zeros_like(mean)
    zero_spread = (grouped.max(dim=1).values - grouped.min(dim=1).values) == 0  # [B]
    advantages = torch.where(zero_spread[:, None], torch.zeros_like(grouped), (grouped - mean) / (std + eps))
    return advantages.reshape(-1), zero_spread


@dataclass
class GRPOLoss:
    loss: torch.Tensor  # scalar to minimise
    policy_loss: torch.Tensor  # scalar, -clipped surrogate
    kl: torch.Tensor  # scalar, mean k3 KL to the reference
    ratio: torch.Tensor  # scalar, mean importance ratio
    clip_fraction: torch.Tensor  # scalar, share of tokens where the clip was active


def grpo_loss(
    logprobs: torch.Tensor,  # [N, L] log π_θ(o_t | …) of the sampled tokens, with grad
    old_logprobs: torch.Tensor,  # [N, L] under the sampling policy (no grad)
    ref_logprobs: torch.Tensor | None,  # [N, L] under the frozen reference (no grad); None when beta == 0
    advantages: torch.Tensor,  # [N]
    mask: torch.Tensor,  # [N, L] bool, the completion's real tokens (through its eos)
    clip_eps: float = 0.2,
    beta: float = 0.04,
) -> GRPOLoss:
    """Token-level clipped-ratio objective minus β·KL(π_θ || π_ref) (k3 estimator), averaged per
    sequence over its own tokens and then over sequences, as in the GRPO paper."""
    mask = mask.float()
    ratio = torch.exp(logprobs - old_logprobs)  # [N, L]
    adv = advantages[:, None]  # [N, 1]
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv
    per_token = -torch.minimum(unclipped, clipped)  # [N, L]
    if ref_logprobs is not None and beta:
        log_ratio_ref = ref_logprobs - logprobs
        kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1  # [N, L], k3: unbiased, always >= 0
    else:
        kl = torch.zeros_like(per_token)
    lengths = mask.sum(dim=1).clamp(min=1)  # [N]

    def seq_mean(x: torch.Tensor) -> torch.Tensor:
        return ((x * mask).sum(dim=1) / lengths).mean()

    policy_loss = seq_mean(per_token)
    kl_mean = seq_mean(kl)
    with torch.no_grad():
        clip_active = ((unclipped - clipped).abs() > 0).float()
    return GRPOLoss(
        loss=policy_loss + beta * kl_mean,
        policy_loss=policy_loss.detach(),
        kl=kl_mean.detach(),
        ratio=seq_mean(ratio.detach()),
        clip_fraction=seq_mean(clip_active),
    )


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token]: logits [N, L, V] predicting tokens [N, L] -> [N, L]."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[..., None])[..., 0]
