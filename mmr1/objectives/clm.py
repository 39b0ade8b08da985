"""Causal-LM pretraining of the reasoning core alone on packed plain text (TextDataModule).

Blocks hold several documents; `document_ids` keep attention and RoPE positions inside each
one, so no compute goes to padding. Logs the loss, the share of padding tokens, and on
validation the perplexity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmr1.objectives.base import ObjectiveModule
from mmr1.losses.language import sft_loss


class CLMModule(ObjectiveModule):
    """Next-token cross-entropy of the core; encoders and fusion are left untouched."""

    def __init__(self, **base):
        super().__init__(**base)
        self._val_nll = [0.0, 0]  # summed token negative log-likelihood, token count (this epoch)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self.model.core(batch["input_ids"], batch["attention_mask"],
                              document_ids=batch["document_ids"])  # logits [B, T, V]
        return {"loss": sft_loss(out.logits, batch["labels"])}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "padding_fraction" in batch:
            self.log("train/padding_fraction", float(batch["padding_fraction"]), batch_size=len(batch["input_ids"]))
        return super().training_step(batch, batch_idx)

    def on_validation_epoch_start(self) -> None:
        self._val_nll = [0.0, 0]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.model.core(batch["input_ids"], batch["attention_mask"], document_ids=batch["document_ids"])
        logits, targets = out.logits[:, :-1], batch["labels"][:, 1:]  # [B, T-1, V], [B, T-1]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="sum")
        count = int((targets != -100).sum())
        self._val_nll[0] += float(nll)
        self._val_nll[1] += count
        self.log("val/loss", nll / max(count, 1), batch_size=len(targets), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """Perplexity over every validation token of every rank: exp(sum of NLL / number of tokens)."""
        totals = self.trainer.strategy.reduce(torch.tensor(self._val_nll, dtype=torch.float64, device=self.device),
                                              reduce_op="sum")
        self.log("val/perplexity", torch.exp(totals[0] / totals[1].clamp(min=1)).float(), prog_bar=True)
