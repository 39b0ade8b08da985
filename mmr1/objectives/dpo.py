"""DPO: direct preference optimisation against a frozen reference (Rafailov et al. 2023).

Also home of what the preference objectives share: one core pass over the chosen and
rejected sequences (`pair_forward`) and the summed log-prob of the response tokens
(`response_logprobs`).
"""

from __future__ import annotations


import torch

from mmr1.core import CoreOutput
from mmr1.model import MultimodalModel, media_inputs
from mmr1.objectives.base import ObjectiveModule, reference_copy
from mmr1.objectives.frozen import FrozenModels
from mmr1.losses.language import IGNORE, token_logprobs
from mmr1.losses.preference import dpo_loss, sequence_logprob


def pair_forward(model: MultimodalModel, batch: dict, logits_to_keep: int = 0) -> CoreOutput:
    """One core pass over the chosen then the rejected sequences ([2B, T]), the media encoded once."""
    ids = torch.cat((batch["chosen_input_ids"], batch["rejected_input_ids"]))  # [2B, T]
    mask = torch.cat((batch["chosen_attention_mask"], batch["rejected_attention_mask"]))  # [2B, T]
    prefix = model.prefix(**media_inputs(batch))
    return model.core(ids, mask, prefix_embeds=None if prefix is None else prefix.embeds.repeat(2, 1, 1),
                      prefix_mask=None if prefix is None else prefix.mask.repeat(2, 1), logits_to_keep=logits_to_keep)


def response_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-probs of the response tokens: logits [N, T, V] at t predict labels [N, T] at t + 1 -> [N]."""
    targets = labels[:, 1:]  # [N, T-1]
    keep = targets != IGNORE
    return sequence_logprob(token_logprobs(logits[:, :-1], targets.masked_fill(~keep, 0)), keep)


class DPOModule(FrozenModels, ObjectiveModule):
    """Preference pairs (PreferenceDataModule) -> DPO loss; logs the reward margin and preference accuracy.

    The policy trains `deterministic` (no dropout, no SpecAugment), computing what the frozen reference
    computes, so the implicit reward of an unchanged policy is exactly 0."""

    deterministic_policy = True

    def __init__(self, beta: float = 0.1, **base):
        """
        Args:
            beta: strength of the implicit KL to the reference (DPO's β).
            **base: model, optimiser and freezing arguments of ObjectiveModule.
        """
        super().__init__(**base)
        if beta <= 0:
            raise ValueError(f"beta: must be > 0, got {beta}")
        self.save_hyperparameters()
        self._frozen = {"reference": reference_copy(self.model)}

    @property
    def reference(self) -> MultimodalModel:
        return self._frozen["reference"]

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        labels = torch.cat((batch["chosen_labels"], batch["rejected_labels"]))  # [2B, T]
        policy_chosen, policy_rejected = response_logprobs(pair_forward(self.model, batch).logits, labels).chunk(2)
        with torch.no_grad():
            ref_chosen, ref_rejected = response_logprobs(pair_forward(self.reference, batch).logits, labels).chunk(2)
        loss, margin = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, self.hparams.beta)
        beta = self.hparams.beta
        return {"loss": loss, "reward_margin": margin.mean(), "preference_accuracy": (margin > 0).float().mean(),
                "chosen_reward": beta * (policy_chosen - ref_chosen).detach().mean(),
                "rejected_reward": beta * (policy_rejected - ref_rejected).detach().mean()}
