"""Contrastive pretraining: image–text, audio–text and image–audio InfoNCE on the encoders' pooled states."""

from __future__ import annotations

import math
from itertools import combinations

import torch
from torch import nn

from mmr1.objectives.base import ObjectiveModule, media
from mmr1.objectives.losses import clip_loss, recall_at_1


class ContrastiveModule(ObjectiveModule):
    """One projection per modality into a shared space and one learnable temperature per modality pair."""

    def __init__(self, *args, embed_dim: int = 64, init_temperature: float = 0.07, **kwargs):
        """embed_dim: width of the shared space; init_temperature: starting softmax temperature (CLIP's 0.07)."""
        super().__init__(*args, **kwargs)
        widths = {m: enc.width for m, enc in self.model._encoders().items()}
        self.projections = nn.ModuleDict({m: nn.Linear(w, embed_dim, bias=False) for m, w in widths.items()})
        self.logit_scales = nn.ParameterDict({
            f"{a}_{b}": nn.Parameter(torch.tensor(math.log(1 / init_temperature)))
            for a, b in combinations(widths, 2)})

    def pairs(self, batch: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{"image_text": (a [N, E], b [N, E])} for every modality pair with >= 2 rows holding both."""
        encoded = self.model.encode(**media(batch))
        out = {}
        for a, b in combinations(encoded, 2):
            key = f"{a}_{b}" if f"{a}_{b}" in self.logit_scales else f"{b}_{a}"
            rows = encoded[a].present & encoded[b].present  # [B]
            if rows.sum() >= 2:
                out[key] = (self.projections[a](encoded[a].pooled[rows]), self.projections[b](encoded[b].pooled[rows]))
        if not out:
            raise ValueError("batch: no modality pair has two or more rows; contrastive training needs paired records")
        return out

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        rank, world = self.global_rank, self.trainer.world_size if self._trainer is not None else 1
        terms = {key: clip_loss(a, b, self.logit_scales[key], rank, world) for key, (a, b) in self.pairs(batch).items()}
        return {"loss": sum(terms.values()) / len(terms), **terms}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        pairs = self.pairs(batch)
        terms = {key: clip_loss(a, b, self.logit_scales[key]) for key, (a, b) in pairs.items()}
        metrics = {"loss": sum(terms.values()) / len(terms), **terms}
        for key, (a, b) in pairs.items():
            first, second = key.split("_")
            metrics[f"r1_{first}2{second}"], metrics[f"r1_{second}2{first}"] = recall_at_1(a, b)
        self._log_terms(metrics, "val", batch)
