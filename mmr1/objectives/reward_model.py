"""Reward model: a scalar head on the core's last real token, trained Bradley–Terry on preference pairs.

A saved reward model is a checkpoint folder (config.json + model.safetensors + tokenizer)
plus `reward_head.safetensors`; PPOModule loads it with `reward_model: FOLDER`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmr1.config import Config
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.model import MultimodalModel, media_inputs
from mmr1.objectives.base import ObjectiveModule
from mmr1.objectives.dpo import pair_forward
from mmr1.objectives.frozen import check_vocabulary, frozen
from mmr1.losses.preference import bradley_terry_loss
from mmr1.rl.rollout import Rollout

HEAD_NAME = "reward_head.safetensors"


def last_token_states(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden [N, T, D] at each row's last real token (left or right padding) -> [N, D]."""
    positions = torch.arange(mask.shape[1], device=mask.device)  # [T]
    last = (mask.long() * positions).argmax(dim=1)  # [N], increasing over real tokens, so the last one wins
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class RewardModel(nn.Module):
    """A MultimodalModel scoring prompt + response with Linear(d_model, 1) on the last real token's state."""

    def __init__(self, model: MultimodalModel, head: nn.Linear | None = None):
        super().__init__()
        self.model = model
        self.head = head if head is not None else nn.Linear(model.config.core.d_model, 1)

    def score(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scores [N] from the core's final states [N, T, D] and the text mask [N, T]."""
        return self.head(last_token_states(hidden, mask))[:, 0]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **media) -> torch.Tensor:
        """Scores [N] of the sequences input_ids [N, T] under their media."""
        out, _ = self.model(input_ids, attention_mask, logits_to_keep=1, **media)
        return self.score(out.hidden, attention_mask)

    def save_pretrained(self, folder: str | Path, tokenizer=None) -> Path:
        folder = self.model.save_pretrained(folder, tokenizer)
        save_file({k: v.detach().contiguous() for k, v in self.head.state_dict().items()}, str(folder / HEAD_NAME))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "RewardModel":
        path = Path(folder) / HEAD_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no {HEAD_NAME}; expected a folder written by "
                                    "RewardModel.save_pretrained")
        model = MultimodalModel.from_pretrained(folder)
        head = nn.Linear(model.config.core.d_model, 1)
        state = load_file(str(path))
        if {k: list(v.shape) for k, v in state.items()} != {k: list(v.shape) for k, v in head.state_dict().items()}:
            raise ValueError(f"{path}: expected weight [1, {model.config.core.d_model}] and bias [1], got "
                             f"{ {k: list(v.shape) for k, v in state.items()} }")
        head.load_state_dict(state)
        return cls(model, head).eval()


class RewardModelModule(ObjectiveModule):
    """Bradley–Terry on preference pairs (PreferenceDataModule): the chosen response should score higher.

    When fit ends, the reward model (weights + head + tokenizer) is written to `<run dir>/reward_model`."""

    def __init__(self, **base):
        """
        Args:
            **base: model, optimiser and freezing arguments of ObjectiveModule.
        """
        super().__init__(**base)
        self.head = nn.Linear(self.config.core.d_model, 1)

    @property
    def reward_model(self) -> RewardModel:
        return RewardModel(self.model, self.head)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        out = pair_forward(self.model, batch, logits_to_keep=1)
        mask = torch.cat((batch["chosen_attention_mask"], batch["rejected_attention_mask"]))  # [2B, T]
        chosen, rejected = self.reward_model.score(out.hidden, mask).chunk(2)  # [B] each
        return {"loss": bradley_terry_loss(chosen, rejected), "accuracy": (chosen > rejected).float().mean(),
                "margin": (chosen - rejected).detach().mean()}

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero:
            folder = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "reward_model"
            self.reward_model.save_pretrained(folder, self.tokenizer or Tokenizer.default())


def load_reward_model(folder: str, config: Config) -> RewardModel:
    """A frozen RewardModel from its folder, refused unless it shares the policy's vocabulary."""
    scorer = RewardModel.from_pretrained(folder)
    check_vocabulary(folder, scorer.model.config, config, None, "reward_model")
    return frozen(scorer)


@torch.no_grad()
def score_rollout(scorer: RewardModel, batch: dict, rollout: Rollout) -> torch.Tensor:
    """The reward model's score [B*G] of each sampled response after its prompt, under its prompt's media."""
    G = rollout.group_size
    ids = torch.cat((rollout.prompt_ids.repeat_interleave(G, dim=0), rollout.completion_ids), dim=1)  # [B*G, T+L]
    mask = torch.cat((rollout.prompt_mask.repeat_interleave(G, dim=0), rollout.completion_mask), dim=1)
    media = {k: v.repeat_interleave(G, dim=0) for k, v in media_inputs(batch).items()}  # each [B*G, ...]
    return scorer(ids, mask, **media)
