"""Preference losses: DPO against a frozen reference, and the Bradley-Terry loss of a reward model.

Shapes: N sequences, L completion tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sequence_logprob(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of log-probs over the real tokens: [N, L], [N, L] -> [N]."""
    return (token_logprobs * mask.float()).sum(dim=1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al. 2023) on sequence log-probs [N]: -log σ(β[(πc - rc) - (πr - rr)]).

    Returns (loss, reward margin [N] = β·((πc - rc) - (πr - rr)), detached)."""
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))  # [N]
    return -F.logsigmoid(margin).mean(), margin.detach()


def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """Reward-model loss on scalar scores [N]: -log σ(s_chosen - s_rejected)."""
    return -F.logsigmoid(chosen_scores - rejected_scores).mean()
