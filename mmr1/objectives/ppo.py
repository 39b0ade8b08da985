"""PPO (InstructGPT-style): one sampled response per prompt, scored by a reward model or rule rewards,
a KL-penalised per-token reward, GAE over the response's real tokens, clipped policy and value losses.

The value head is a Linear on the policy core's final states (a shared trunk). `micro_batch_size`
bounds the sequences per forward/backward; `ppo_epochs` optimizer steps are made per rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import torch
from torch import nn

from mmr1.model import MultimodalModel
from mmr1.objectives.base import ObjectiveModule, batch_size, reference_copy
from mmr1.objectives.frozen import FrozenModels, check_vocabulary
from mmr1.objectives.reward_model import load_reward_model, score_rollout
from mmr1.losses.language import token_logprobs
from mmr1.losses.ppo import gae, kl_penalised_rewards, ppo_loss
from mmr1.rl.rewards import Rewards, reward_records
from mmr1.rl.rollout import (Rollout, check_full_distribution, completion_forward, decode_completions, micro_batches,
                             rollout_logprobs, sample_groups)


@dataclass
class Experience:
    """One rollout, scored and valued before any update; every tensor [N, L] unless said."""

    score: torch.Tensor  # [N] reward-model or rule score of each response
    logprobs: torch.Tensor  # log π_old of the sampled tokens
    ref_logprobs: torch.Tensor  # log π_ref of the sampled tokens
    values: torch.Tensor  # V_old(s_t), the state that chose token t
    rewards: torch.Tensor  # KL-penalised per-token rewards, the score on the last real token
    advantages: torch.Tensor  # GAE, zero on padding (not whitened)
    returns: torch.Tensor  # advantages + values, zero on padding
    mask: torch.Tensor  # bool, the response's real tokens (through its eos)
    terms: dict[str, list[float]]  # each rule reward's values, for logging (empty with a reward model)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x [N, L] shifted and scaled to zero mean, unit variance over the mask; zero elsewhere."""
    mask = mask.float()
    n = mask.sum().clamp(min=1)
    mean = (x * mask).sum() / n
    var = ((x - mean) ** 2 * mask).sum() / n
    return (x - mean) * torch.rsqrt(var + eps) * mask


class PPOModule(FrozenModels, ObjectiveModule):
    """Prompts (RLPromptDataModule) -> PPO with a value head, a frozen reference and a reward model or rules."""

    deterministic_policy = True  # the policy trains in eval mode (`deterministic`): first ratio 1, KL 0

    def __init__(
        self,
        reward_model: Optional[str] = None,
        rewards: Optional[Mapping[str, float]] = None,
        micro_batch_size: int = 16,
        ppo_epochs: int = 2,
        max_new_tokens: int = 96,
        temperature: float = 1.0,
        top_p: float = 1.0,
        kl_coef: float = 0.05,
        gamma: float = 1.0,
        lam: float = 0.95,
        clip_eps: float = 0.2,
        value_clip: float = 0.2,
        value_coef: float = 0.5,
        entropy_coef: float = 0.01,
        max_grad_norm: float = 1.0,
        **base,
    ):
        """
        Args:
            reward_model: a folder written by RewardModel.save_pretrained; None = rule rewards.
            rewards: rule reward name or import path -> weight (only without reward_model); default
                accuracy 1.0 + format 0.5.
            micro_batch_size: sequences per forward/backward (gradients accumulate over the rollout).
            ppo_epochs: optimizer steps per rollout.
            max_new_tokens / temperature: sampling of the responses (stops at </s>); log-probs, values and
                entropies are taken on the same temperature-scaled distribution, without dropout.
            top_p: must stay 1.0 (a nucleus cannot be matched by the log-probs; refused otherwise).
            kl_coef: per-token penalty on log π - log π_ref.
            gamma / lam: GAE discount and trace decay.
            clip_eps / value_clip: clip ranges of the policy ratio and of the value change.
            value_coef / entropy_coef: weights of the value loss and of the entropy bonus.
            max_grad_norm: gradient clipping (manual optimisation, so the Trainer's own is not used).
            **base: model, optimiser and freezing arguments of ObjectiveModule.
        """
        super().__init__(**base)
        if reward_model is not None and rewards is not None:
            raise ValueError("rewards: give either a reward_model folder or rule rewards, not both")
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0 to sample responses, got {temperature}")
        check_full_distribution(0, top_p)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.value_head = nn.Linear(self.config.core.d_model, 1)
        self.rewards = None if reward_model is not None else Rewards(rewards or {"accuracy": 1.0, "format": 0.5})
        self._frozen = {"reference": reference_copy(self.model)}
        if reward_model is not None:
            self._frozen["reward_model"] = load_reward_model(reward_model, self.config)

    @property
    def reference(self) -> MultimodalModel:
        return self._frozen["reference"]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.hparams.reward_model is not None:
            check_vocabulary(self.hparams.reward_model, self._frozen["reward_model"].model.config, self.config,
                             self.tokenizer, "reward_model")

    # ---- pieces --------------------------------------------------------------------------------
    def sample(self, batch: dict) -> Rollout:
        h = self.hparams
        return sample_groups(self.model, batch, 1, h.max_new_tokens, h.temperature, top_p=h.top_p,
                             eos_token_id=self.tokenizer.eos_id)

    @torch.no_grad()
    def score(self, batch: dict, rollout: Rollout) -> tuple[torch.Tensor, dict[str, list[float]]]:
        """Each response's score [N] and the rule terms ({} under a reward model)."""
        if self.rewards is None:
            return score_rollout(self._frozen["reward_model"], batch, rollout), {}
        completions = decode_completions(self.tokenizer, rollout.completion_ids)
        total, terms = self.rewards(completions, reward_records(batch))
        return torch.tensor(total, device=self.device), terms

    def evaluate(self, batch: dict, rollout: Rollout, rows: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Under the current policy, for the rollout's rows: log-probs, values and entropies of the sampled
        tokens, each [n, L], on the sampling distribution; with grad when grad is enabled."""
        logits, hidden = completion_forward(self.model, batch, rollout, rows, self.shares_prompt)  # [n, L, V], [n, L, D]
        values = self.value_head(hidden)[..., 0]  # [n, L], the states that chose each token
        entropy = torch.distributions.Categorical(logits=logits).entropy()  # [n, L]
        return token_logprobs(logits, rollout.completion_ids[rows]), values, entropy

    @torch.no_grad()
    def experience(self, batch: dict, rollout: Rollout) -> Experience:
        """The rollout scored before any update, in the update's micro-batches (so the first ratio is 1)."""
        h = self.hparams
        mask = rollout.completion_mask
        score, terms = self.score(batch, rollout)
        scored = [self.evaluate(batch, rollout, rows) for rows in micro_batches(mask.shape[0], h.micro_batch_size)]
        logprobs, values = torch.cat([s[0] for s in scored]), torch.cat([s[1] for s in scored])  # [N, L]
        ref_logprobs = rollout_logprobs(self.reference, batch, rollout, h.micro_batch_size, self.shares_prompt)
        rewards = kl_penalised_rewards(score, logprobs, ref_logprobs, mask, h.kl_coef)  # [N, L]
        advantages, returns = gae(rewards, values, mask, h.gamma, h.lam)
        return Experience(score, logprobs, ref_logprobs, values, rewards, advantages, returns, mask, terms)

    # ---- one step ------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        h = self.hparams
        rollout = self.sample(batch)
        exp = self.experience(batch, rollout)
        advantages = whiten(exp.advantages, exp.mask)
        N = exp.score.numel()
        for _ in range(h.ppo_epochs):
            stats = []
            for rows in micro_batches(N, h.micro_batch_size):
                logprobs, values, entropy = self.evaluate(batch, rollout, rows)
                out = ppo_loss(logprobs, exp.logprobs[rows], advantages[rows], values, exp.values[rows],
                               exp.returns[rows], exp.mask[rows], entropy, h.clip_eps, h.value_clip, h.value_coef,
                               h.entropy_coef)
                self.manual_backward(out.loss * (rows.stop - rows.start) / N)
                stats.append(out)
            self.manual_optimizer_step(h.max_grad_norm)

        mask = exp.mask.float()
        logs = {
            "reward": exp.score.mean(),
            "kl": ((exp.logprobs - exp.ref_logprobs) * mask).sum() / mask.sum().clamp(min=1),
            "response_length": mask.sum(dim=1).mean(),
            **{name: torch.stack([getattr(s, name).detach() for s in stats]).mean()
               for name in ("loss", "policy_loss", "value_loss", "entropy", "clip_fraction")},
            **{f"reward_{name}": torch.tensor(values).mean() for name, values in exp.terms.items()},
        }
        for name, value in logs.items():
            self.log(f"train/{name}", value, prog_bar=name == "reward", batch_size=N)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Held-out prompts: the mean score of one sampled response each (and each rule term)."""
        rollout = self.sample(batch)
        score, terms = self.score(batch, rollout)
        n = batch_size(batch)
        self.log("val/reward", score.mean(), prog_bar=True, batch_size=n, sync_dist=True)
        for name, values in terms.items():
            self.log(f"val/reward_{name}", torch.tensor(values).mean(), batch_size=n, sync_dist=True)
