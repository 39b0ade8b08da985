"""Supervised fine-tuning: next-token cross-entropy on the response tokens only."""

from __future__ import annotations

import torch

from mmr1.objectives.base import ObjectiveModule, media
from mmr1.objectives.losses import sft_loss


class SFTModule(ObjectiveModule):
    """Cold-start / rejection-sampled / downstream SFT; the collator puts -100 on prompt and padding."""

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        out, _ = self.model(batch["input_ids"], batch["attention_mask"], **media(batch))
        return {"loss": sft_loss(out.logits, batch["labels"])}  # logits [B, T, V]
