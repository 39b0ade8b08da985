"""GRPO maths (DeepSeekMath / DeepSeek-R1), as plain functions.

Shapes: B prompts, G samples per prompt, N = B*G sequences, L completion tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


LOSS_TYPES = ("grpo", "dr_grpo", "dapo")  # how token losses are averaged; see `grpo_loss`


def check_loss_type(loss_type: str) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type: expected one of {list(LOSS_TYPES)}, got {loss_type!r}")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True,
                     eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative advantages: r minus the mean of its prompt's group, divided by (std + eps) when `scale`.

    The std is the group's population std, sqrt(mean((r - mean)^2)) (ddof 0); TRL's
    `scale_rewards="group"` takes the sample std (ddof 1), sqrt(G / (G - 1)) times larger.
    `scale=False` is Dr. GRPO's choice (Liu et al. 2025): the division up-weights groups whose rewards
    barely differ. rewards [B*G] ordered prompt-major (rows b*G … b*G+G-1 share a prompt) ->
    advantages [B*G], and zero_spread [B] (groups whose rewards are all equal: advantage 0).
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards: expected [B*G] with G={group_size}, got {list(rewards.shape)}")
    grouped = rewards.view(-1, group_size).float()  # [B, G]
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # [B, G]
    zero_spread = (grouped.max(dim=1).values - grouped.min(dim=1).values) == 0  # [B]
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True, unbiased=False) + eps)
    advantages = torch.where(zero_spread[:, None], torch.zeros_like(grouped), centred)
    return advantages.reshape(-1), zero_spread


@dataclass
class GRPOLoss:
    loss: torch.Tensor  # scalar to minimise: these rows' share of the rollout's loss
    policy_loss: torch.Tensor  # scalar, these rows' share of -clipped surrogate
    kl: torch.Tensor  # scalar, mean k3 KL to the reference per token of these rows
    ratio: torch.Tensor  # scalar, mean importance ratio per token
    clip_fraction: torch.Tensor  # scalar, share of tokens where the clip was active


def grpo_loss(
    logprobs: torch.Tensor,  # [n, L] log π_θ(o_t | …) of the sampled tokens, with grad
    old_logprobs: torch.Tensor,  # [n, L] under the sampling policy (no grad)
    ref_logprobs: torch.Tensor | None,  # [n, L] under the frozen reference (no grad); None when beta == 0
    advantages: torch.Tensor,  # [n]
    mask: torch.Tensor,  # [n, L] bool, the completion's real tokens (through its eos)
    clip_eps: float = 0.2,
    beta: float = 0.04,
    loss_type: str = "grpo",
    num_sequences: int | None = None,  # N, sequences in the whole rollout; default n
    num_tokens: int | None = None,  # real completion tokens in the whole rollout; default mask.sum()
    max_completion_length: int | None = None,  # the sampler's max_new_tokens; default L
) -> GRPOLoss:
    """Token-level clipped-ratio objective plus β·KL(π_θ || π_ref) (k3 estimator), reduced by `loss_type`:

    - `grpo`: each sequence's mean over its own tokens, then the mean over sequences (GRPO paper);
    - `dr_grpo`: the sum over all tokens / (N · max_completion_length) (Dr. GRPO, Liu et al. 2025);
    - `dapo`: the sum over all tokens / the number of tokens (DAPO's token-level loss, Yu et al. 2025).

    The rows may be one micro-batch of a rollout: with the rollout's num_sequences, num_tokens and
    max_completion_length, the micro-batches' losses add up to the whole rollout's loss.
    """
    check_loss_type(loss_type)
    mask = mask.float()
    n, L = mask.shape
    ratio = torch.exp(logprobs - old_logprobs)  # [n, L]
    adv = advantages[:, None]  # [n, 1]
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv
    per_token = -torch.minimum(unclipped, clipped)  # [n, L]
    if ref_logprobs is not None and beta:
        log_ratio_ref = ref_logprobs - logprobs
        kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1  # [n, L], k3: unbiased, always >= 0
    else:
        kl = torch.zeros_like(per_token)

    def reduce(x: torch.Tensor) -> torch.Tensor:  # x [n, L] -> these rows' share of the rollout's mean
        if loss_type == "grpo":
            return ((x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum() / (num_sequences or n)
        if loss_type == "dr_grpo":
            return (x * mask).sum() / ((num_sequences or n) * (max_completion_length or L))
        return (x * mask).sum() / max(1, num_tokens if num_tokens is not None else int(mask.sum()))

    def token_mean(x: torch.Tensor) -> torch.Tensor:
        return (x * mask).sum() / mask.sum().clamp(min=1)

    policy_loss = reduce(per_token)
    with torch.no_grad():
        clip_active = ((unclipped - clipped).abs() > 0).float()
    return GRPOLoss(
        loss=policy_loss + beta * reduce(kl),
        policy_loss=policy_loss.detach(),
        kl=token_mean(kl.detach()),
        ratio=token_mean(ratio.detach()),
        clip_fraction=token_mean(clip_active),
    )
