"""Supervised fine-tuning: next-token cross-entropy on the response tokens only, plus optionally
cross-entropy of the classification head on records with a `label` (batch `class_labels`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmr1 import metrics
from mmr1.datamodules.collate import prompts_of
from mmr1.model import media_inputs
from mmr1.objectives.base import ObjectiveModule, batch_size
from mmr1.losses.language import IGNORE, sft_loss
from mmr1.rl.rollout import greedy_completions


class SFTModule(ObjectiveModule):
    """Cold-start / rejection-sampled / downstream SFT; the collator puts -100 on prompt and padding."""

    def __init__(self, classification_weight: float = 0.0, val_max_new_tokens: int = 0, **base):
        """
        Args:
            classification_weight: weight of the class cross-entropy (needs `n_classes > 0` and
                `class_labels` in every batch); 0 = language modelling only.
            val_max_new_tokens: > 0: validation also answers each record's prompt greedily (up to this many
                tokens) and logs val/accuracy and val/format_rate, as GRPO's validation does, so a checkpoint
                (or `StartCandidate`) can be chosen by accuracy; 0 = val/loss only.
            **base: model, optimiser and freezing arguments of ObjectiveModule.
        """
        super().__init__(**base)
        if classification_weight < 0:
            raise ValueError(f"classification_weight: expected >= 0, got {classification_weight}")
        if val_max_new_tokens < 0:
            raise ValueError(f"val_max_new_tokens: expected >= 0 (0 = no answers in validation), got "
                             f"{val_max_new_tokens}")
        if classification_weight and not self.config.n_classes:
            raise ValueError("classification_weight: the model has no classification head; set n_classes > 0 "
                             "(overrides: {n_classes: K}) or classification_weight: 0")
        self.save_hyperparameters()

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        out, _ = self.model(batch["input_ids"], batch["attention_mask"], **media_inputs(batch))
        terms = {"loss": sft_loss(out.logits, batch["labels"])}  # logits [B, T, V]
        weight = self.hparams.classification_weight
        if weight:
            terms["lm"] = terms["loss"]
            terms["classification"] = self.classification_loss(batch)
            terms["loss"] = terms["lm"] + weight * terms["classification"]
        return terms

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if not (batch and self.hparams.val_max_new_tokens):
            return
        if "answers" not in batch:
            raise ValueError("val_max_new_tokens: the val records need an `answer` to score the greedy answers by")
        prompt_ids, prompt_mask = prompts_of(batch["input_ids"], batch["labels"], batch["attention_mask"],
                                             self.tokenizer.pad_id)  # [B, P], left-padded
        completions = greedy_completions(self.model, self.tokenizer, prompt_ids, prompt_mask, batch,
                                         self.hparams.val_max_new_tokens)
        n = batch_size(batch)
        self.log("val/accuracy", metrics.accuracy(completions, batch["answers"]), batch_size=n, sync_dist=True)
        self.log("val/format_rate", metrics.format_rate(completions), batch_size=n, sync_dist=True)

    def classification_loss(self, batch: dict) -> torch.Tensor:
        """Cross-entropy of the class logits from the pooled prompt (the response would give the answer away)."""
        if "class_labels" not in batch:
            raise ValueError("classification_weight: a batch has no class_labels; every record needs a `label` "
                             "(a class index, or one of its `choices`)")
        labels = batch["class_labels"]  # [B]
        if int(labels.max()) >= self.config.n_classes:
            raise ValueError(f"class_labels: label {int(labels.max())} is out of range for n_classes="
                             f"{self.config.n_classes}")
        prompt = batch["attention_mask"].bool() & (batch["labels"] == IGNORE)  # [B, T], right-padded prefixes
        width = int(prompt.sum(dim=1).max())
        logits = self.model.classify(batch["input_ids"][:, :width], prompt[:, :width], **media_inputs(batch))  # [B, C]
        return F.cross_entropy(logits.float(), labels)
