"""GRPO: group-relative policy optimisation with rule rewards (DeepSeekMath, DeepSeek-R1), plus
optionally a learned reward model's score (R1 stage 2: rule rewards plus a reward model).

The three batch-size knobs, all independent:
- prompts per step: the datamodule's `batch_size` (B prompts sampled per optimizer step);
- `group_size` G: responses sampled per prompt (their rewards are normalised within the group);
- `micro_batch_size`: sequences per forward/backward (a multiple of G); gradients of all
  B*G sequences are accumulated before one optimizer step, so it changes memory, not maths.
`ppo_epochs` passes are made over each rollout (μ in the GRPO paper); each pass is one step.

`loss_type` picks how token losses are averaged (`grpo`, `dr_grpo`, `dapo`; see
`mmr1.losses.grpo.grpo_loss`); `dr_grpo` also drops the std scaling of the advantages. `filter_groups`
updates on the groups whose rewards differ only (DAPO's dynamic sampling). Log-probs
are taken on the distribution the responses were sampled from (temperature-scaled logits, no
dropout or SpecAugment), so the first ratio is 1 and the KL to an unchanged reference is 0. The core reads
each prompt once for its G responses (`completion_forward`'s share_prompt), in scoring and in the update.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

from mmr1.objectives.base import ObjectiveModule, batch_size, reference_copy
from mmr1.objectives.frozen import FrozenModels, check_vocabulary
from mmr1.objectives.reward_model import load_reward_model, score_rollout
from mmr1.losses.grpo import check_loss_type, group_advantages, grpo_loss
from mmr1 import metrics
from mmr1.rl.rewards import Rewards, reward_records
from mmr1.rl.rollout import (Rollout, check_full_distribution, completion_logprobs, decode_completions,
                             greedy_completions, micro_batches, rollout_logprobs, sample_groups, select_groups)

MAX_FLAT_ROLLOUTS = 100  # filter_groups: rollouts in a row without a group to learn from before giving up


class GRPOModule(FrozenModels, ObjectiveModule):
    deterministic_policy = True  # the policy trains in eval mode (`deterministic`): first ratio 1, KL 0

    def __init__(
        self,
        group_size: int = 4,
        micro_batch_size: int = 16,
        ppo_epochs: int = 1,
        max_new_tokens: int = 96,
        temperature: float = 1.0,
        top_p: float = 1.0,
        clip_eps: float = 0.2,
        beta: float = 0.04,
        loss_type: str = "grpo",
        filter_groups: bool = False,
        max_grad_norm: float = 1.0,
        rewards: Optional[Mapping[str, float]] = None,
        reward_model: Optional[str] = None,
        reward_model_weight: float = 1.0,
        **base,
    ):
        """
        Args:
            group_size: G responses sampled per prompt.
            micro_batch_size: sequences per forward/backward; a multiple of group_size.
            ppo_epochs: optimizer steps per rollout (1 = fully on-policy).
            max_new_tokens / temperature: sampling of the responses (stops at </s>); log-probs are taken
                on the same temperature-scaled distribution.
            top_p: must stay 1.0 (a nucleus cannot be matched by the log-probs; refused otherwise).
            clip_eps: PPO clip range of the importance ratio.
            beta: weight of the k3 KL to the frozen reference model (0 disables the reference).
            loss_type: `grpo` (each response's mean token loss, then the mean over responses), `dr_grpo`
                (token sum / (responses * max_new_tokens), advantages not divided by the group std) or
                `dapo` (token sum / tokens in the rollout).
            filter_groups: DAPO's dynamic sampling (Yu et al. 2025): the update is made on the groups whose
                rewards differ, the others (advantage 0, no policy gradient) are dropped, so neither the loss's
                mean nor the KL term is spread over them; a rollout with no such group makes no update and the
                next batch is drawn (`max_steps` counts updates). Draw more prompts per step (`batch_size`) to
                keep enough groups once the policy answers most prompts the same way every time.
            max_grad_norm: gradient clipping (manual optimisation, so the Trainer's own is not used).
            rewards: reward name or import path -> weight; default accuracy 1.0 + format 0.5.
            reward_model: a folder written by RewardModel.save_pretrained; its score, times
                reward_model_weight, is added to the rule rewards. None = rule rewards only.
            **base: model, optimiser and freezing arguments of ObjectiveModule.
        """
        super().__init__(**base)
        if group_size < 2:
            raise ValueError(f"group_size: needs at least 2 responses per prompt to compare, got {group_size}")
        if micro_batch_size % group_size:
            raise ValueError(f"micro_batch_size: must be a multiple of group_size={group_size}, got {micro_batch_size}")
        check_loss_type(loss_type)
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0 to sample responses, got {temperature}")
        check_full_distribution(0, top_p)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self._flat_rollouts = 0  # rollouts in a row without a group to learn from (filter_groups)
        self.rewards = Rewards(rewards or {"accuracy": 1.0, "format": 0.5})
        self._frozen = {"reference": reference_copy(self.model)} if beta else {}
        if reward_model is not None:
            self._frozen["reward_model"] = load_reward_model(reward_model, self.config)

    @property
    def reference(self):
        return self._frozen.get("reference")

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.hparams.reward_model is not None:
            check_vocabulary(self.hparams.reward_model, self._frozen["reward_model"].model.config, self.config,
                             self.tokenizer, "reward_model")

    # ---- one step ------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        h = self.hparams
        G = h.group_size
        rollout = sample_groups(self.model, batch, G, h.max_new_tokens, h.temperature, top_p=h.top_p,
                                eos_token_id=self.tokenizer.eos_id)
        completions = decode_completions(self.tokenizer, rollout.completion_ids)
        total, terms = self.rewards(completions, reward_records(batch, G))
        rewards = torch.tensor(total, device=self.device)  # [B*G]
        learned = None  # [B*G] the reward model's scores
        if h.reward_model is not None:
            learned = score_rollout(self._frozen["reward_model"], batch, rollout)
            rewards = rewards + h.reward_model_weight * learned
        advantages, zero_spread = self.advantages(rewards)
        logs = {
            "reward": rewards.mean(),
            "accuracy": torch.tensor(terms["accuracy"]).mean() if "accuracy" in terms else None,
            "reward_model": learned.mean() if learned is not None else None,
            "response_length": rollout.lengths.float().mean(),
            "zero_spread_groups": zero_spread.float().mean(),
            **{f"reward_{name}": torch.tensor(values).mean() for name, values in terms.items()},
        }
        if h.filter_groups:
            if zero_spread.all():
                self._flat_rollouts += 1
                if self._flat_rollouts >= MAX_FLAT_ROLLOUTS:
                    raise RuntimeError(f"filter_groups: {MAX_FLAT_ROLLOUTS} rollouts in a row had no group whose "
                                       f"rewards differ; every prompt is always solved or never (try more prompts "
                                       f"per step, a larger group_size or a higher temperature)")
                self._log_rollout(logs, rewards.numel())
                return
            self._flat_rollouts = 0
            keep = (~zero_spread).nonzero().flatten()  # [K] prompts whose rewards differ
            batch, rollout = select_groups(batch, rollout, keep)
            advantages = advantages.view(-1, G)[keep].reshape(-1)  # [K*G]
        ref, old = self.fixed_logprobs(batch, rollout)
        for _ in range(h.ppo_epochs):
            stats = []
            for rows in micro_batches(advantages.numel(), h.micro_batch_size):
                out = self.micro_batch_loss(batch, rollout, advantages, ref, old, rows)
                self.manual_backward(out.loss)
                stats.append(out)
            self.manual_optimizer_step(h.max_grad_norm)

        logs.update({
            "kl": torch.stack([s.kl for s in stats]).mean(),
            "ratio": torch.stack([s.ratio for s in stats]).mean(),
            "policy_loss": torch.stack([s.policy_loss for s in stats]).sum(),
            "clip_fraction": torch.stack([s.clip_fraction for s in stats]).mean(),
            "trained_groups": torch.tensor(advantages.numel() / G, dtype=torch.float),
        })
        self._log_rollout(logs, rewards.numel())

    def _log_rollout(self, logs: dict, n: int) -> None:
        for name, value in logs.items():
            if value is not None:
                self.log(f"train/{name}", value, prog_bar=name in ("reward", "accuracy"), batch_size=n)

    def advantages(self, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Group-relative advantages [B*G] of rewards [B*G] (not divided by the group std under dr_grpo),
        and which groups [B] had no spread."""
        return group_advantages(rewards, self.hparams.group_size, scale=self.hparams.loss_type != "dr_grpo")

    def fixed_logprobs(self, batch: dict, rollout: Rollout) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """The reference's log-probs [N, L] (None when beta is 0) and the sampling policy's (None with one
        ppo_epoch, where the current log-probs, detached, are the old ones), without grad."""
        h = self.hparams
        size = h.micro_batch_size
        share = self.shares_prompt
        ref = rollout_logprobs(self.reference, batch, rollout, size, share) if self.reference is not None else None
        old = rollout_logprobs(self.model, batch, rollout, size, share) if h.ppo_epochs > 1 else None
        return ref, old

    def micro_batch_loss(self, batch: dict, rollout: Rollout, advantages: torch.Tensor, ref: Optional[torch.Tensor],
                         old: Optional[torch.Tensor], rows: slice):
        """The rollout's `rows` (whole groups) share of the GRPO loss under the current policy, with grad;
        the shares of all micro-batches add up to the rollout's loss."""
        h = self.hparams
        logprobs = completion_logprobs(self.model, batch, rollout, rows, self.shares_prompt)  # [n, L]
        return grpo_loss(logprobs, logprobs.detach() if old is None else old[rows],
                         None if ref is None else ref[rows], advantages[rows], rollout.completion_mask[rows],
                         h.clip_eps, h.beta, h.loss_type, num_sequences=rollout.completion_ids.shape[0],
                         num_tokens=int(rollout.completion_mask.sum()), max_completion_length=h.max_new_tokens)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Greedy answers to held-out prompts: accuracy, format rate and mean rule reward (no reward model)."""
        completions = greedy_completions(self.model, self.tokenizer, batch["input_ids"], batch["attention_mask"], batch,
                                         self.hparams.max_new_tokens)
        total, _ = self.rewards(completions, reward_records(batch))
        n = batch_size(batch)
        self.log("val/reward", torch.tensor(total).mean(), batch_size=n, sync_dist=True)
        self.log("val/format_rate", metrics.format_rate(completions), batch_size=n, sync_dist=True)
        self.log("val/accuracy", metrics.accuracy(completions, batch["answers"]), prog_bar=True, batch_size=n,
                 sync_dist=True)
