"""Contrastive pretraining: image–text, audio–text and image–audio InfoNCE on the encoders' pooled states."""

from __future__ import annotations

import math
from itertools import combinations
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from mmr1.model import media_inputs
from mmr1.objectives.base import ObjectiveModule, batch_size
from mmr1.losses.contrastive import clip_loss, recall_at_1


def summed_over_ranks(counts: torch.Tensor) -> torch.Tensor:
    """Per-pair row counts [K] summed over the ranks (no gradient)."""
    counts = counts.clone()
    dist.all_reduce(counts)
    return counts


class ContrastiveModule(ObjectiveModule):
    """One projection per modality into a shared space and one learnable temperature per modality pair."""

    def __init__(self, *args, embed_dim: int = 64, init_temperature: float = 0.07,
                 pairs: Optional[Sequence[str]] = None, center: bool = False, **kwargs):
        """
        Args:
            embed_dim: width of the shared space.
            init_temperature: starting softmax temperature (CLIP's 0.07).
            pairs: the modality pairs to align, e.g. ["image_text", "audio_text"]; None = every pair of the
                model's modalities. Leave out a pair whose two sides are unrelated in your data (an image and
                a sound chosen independently): aligning them can only teach the encoders to memorise pairings.
            center: subtract each modality's mean projected state over the batch's present rows (this rank's)
                before the cosine. An encoder trained from scratch starts with nearly one pooled state for
                every input (and texts that differ in one word, nearly one too): centred, what they share is
                gone and their differences decide the logits from the first step. The pooled states the
                later stages read are not changed; only the contrastive logits are. On the digits task it
                ends the alignment plateau yet SFT reads the encoders worse (README), so it is off by default.
        """
        super().__init__(*args, **kwargs)
        widths = {m: enc.width for m, enc in self.model._encoders().items()}
        every = [f"{a}_{b}" for a, b in combinations(widths, 2)]
        chosen = every if pairs is None else list(pairs)
        unknown = sorted(set(chosen) - set(every))
        if unknown or not chosen:
            raise ValueError(f"pairs: expected a non-empty subset of {every}, got {list(chosen)}")
        used = {m for key in chosen for m in key.split("_")}
        self.projections = nn.ModuleDict({m: nn.Linear(w, embed_dim, bias=False) for m, w in widths.items()
                                          if m in used})
        self.logit_scales = nn.ParameterDict({
            key: nn.Parameter(torch.tensor(math.log(1 / init_temperature))) for key in every if key in chosen})

    def pairs(self, batch: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """{"image_text": (a [B, E], b [B, E], rows [B] bool)} for every pair of modalities in the batch.

        Rows where either side is absent stay in place (masked by `rows`), so every rank of a
        data-parallel run holds B rows per pair; a modality absent from the batch gives B masked
        zero rows, and the key set is the same on every rank.
        """
        encoded = self.model.encode(**media_inputs(batch))
        B = batch_size(batch)
        out = {}
        for key in self.logit_scales:
            first, second = key.split("_")
            sides = [self._embed(encoded, m, B) for m in (first, second)]
            out[key] = (sides[0][0], sides[1][0], sides[0][1] & sides[1][1])
        return out

    def _embed(self, encoded: dict, modality: str, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected pooled states [B, E], present [B]); zeros and absent when the batch lacks the modality."""
        projection = self.projections[modality]
        if modality in encoded:
            projected, present = projection(encoded[modality].pooled), encoded[modality].present  # [B, E], [B]
            if self.hparams.center and present.any():
                projected = projected - projected[present].mean(dim=0, keepdim=True)
            return projected, present
        zeros = projection.weight.new_zeros(B, projection.in_features)
        return projection(zeros), torch.zeros(B, dtype=torch.bool, device=zeros.device)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Each pair's InfoNCE over the rows holding both sides on all ranks; pairs with < 2 such rows add 0."""
        rank, world = self.global_rank, self.trainer.world_size if self._trainer is not None else 1
        pairs = self.pairs(batch)
        counts = torch.stack([rows.sum() for _, _, rows in pairs.values()])  # [K]
        if world > 1:
            counts = summed_over_ranks(counts)
        losses = {key: clip_loss(a, b, self.logit_scales[key], rank, world, valid=rows)
                  for key, (a, b, rows) in pairs.items()}
        counted = [key for key, n in zip(pairs, counts.tolist()) if n >= 2]
        if not counted:
            raise ValueError("batch: no modality pair has two or more rows; contrastive training needs paired records")
        # A pair with < 2 rows has a loss of exactly 0; summing it keeps every parameter in the graph (DDP).
        return {"loss": sum(losses.values()) / len(counted), **{key: losses[key] for key in counted}}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        pairs = {key: (a[rows], b[rows]) for key, (a, b, rows) in self.pairs(batch).items() if rows.sum() >= 2}
        terms = {key: clip_loss(a, b, self.logit_scales[key]) for key, (a, b) in pairs.items()}
        metrics = {"loss": sum(terms.values()) / len(terms), **terms}
        for key, (a, b) in pairs.items():
            first, second = key.split("_")
            metrics[f"r1_{first}2{second}"], metrics[f"r1_{second}2{first}"] = recall_at_1(a, b)
        self._log_terms(metrics, "val", batch)
