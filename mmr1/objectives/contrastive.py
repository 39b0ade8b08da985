"""Contrastive pretraining: image–text, audio–text and image–audio InfoNCE on the encoders' pooled states."""

from __future__ import annotations

import math
from itertools import combinations
from typing import NamedTuple, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mmr1.model import media_inputs
from mmr1.objectives.base import ObjectiveModule, batch_size
from mmr1.datamodules.regions import SHARED, patch_regions
from mmr1.losses.contrastive import MAX_LOGIT_SCALE, clip_loss, recall_at_1
from mmr1.losses.language import bag_of_tokens_loss, token_bag


class Pair(NamedTuple):
    """One modality pair of a batch: a, b [B, E] projected (and centred, with `center`); rows [B] bool, the rows
    holding both; negatives [N, E] on b's side (or None) and negative_rows [N], the row each belongs to;
    b_keys [B] (or None), equal where b is one text (those rows are each other's positives)."""

    a: torch.Tensor
    b: torch.Tensor
    rows: torch.Tensor
    negatives: Optional[torch.Tensor] = None
    negative_rows: Optional[torch.Tensor] = None
    b_keys: Optional[torch.Tensor] = None


def beats_negatives(pair: Pair) -> torch.Tensor:
    """Share of the rows with hard negatives whose caption is nearer (cosine) to a than all of that row's
    negatives are: 1.0 when a carries every detail the negatives change."""
    a, b, negatives = (F.normalize(x, dim=-1) for x in (pair.a, pair.b, pair.negatives))
    own = (a * b).sum(-1)  # [B]
    hard = (a[pair.negative_rows] * negatives).sum(-1)  # [N]
    worst = torch.full_like(own, -2.0).scatter_reduce(0, pair.negative_rows, hard, reduce="amax")  # [B]
    rows = torch.zeros_like(pair.rows).index_fill(0, pair.negative_rows, True) & pair.rows  # [B]
    return (own > worst)[rows].float().mean()


def summed_over_ranks(counts: torch.Tensor) -> torch.Tensor:
    """Per-pair row counts [K] summed over the ranks (no gradient)."""
    counts = counts.clone()
    dist.all_reduce(counts)
    return counts


class ContrastiveModule(ObjectiveModule):
    """One projection per modality into a shared space and one learnable temperature per modality pair."""

    def __init__(self, *args, embed_dim: int = 64, init_temperature: float = 0.07,
                 pairs: Optional[Sequence[str]] = None, center: bool = False, hard_negatives: bool = False,
                 caption_words: float = 0.0, same_text_positives: bool = False, medium_captions: bool = False,
                 regions: float = 0.0, **kwargs):
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
                ends the alignment plateau yet SFT reads the encoders worse (docs/figures_history.md:
                "What was tried in earlier releases"), so it is off by default.
            hard_negatives: each medium also competes against its record's `image_negatives` /
                `audio_negatives` (NegCLIP; `clip_loss`).
            caption_words: weight of a bag-of-caption-tokens loss on each medium's pooled state (SuperClass).
            same_text_positives: rows whose texts are identical are each other's positives, not negatives
                (UniCL; `clip_loss`'s b_keys). Off, CLIP's one-hot targets.
            medium_captions: a medium whose records carry its own caption (`image_caption` / `audio_caption`:
                what that medium alone shows) is paired with it instead of the record's caption (or text, or
                reasoning). Off, every medium is paired with the record's text.
            regions: weight of a dense region–text loss (RegionCLIP's region–word alignment, one token per
                region as CenterNet locates objects): the patch token at the centre of each of the record's
                `regions` (`patch_regions`) is projected as the pooled image state is and must pick that
                region's text ("a red circle") among the batch's distinct region texts, and every other
                token a learned "no region" embedding. The pooled alignment lets a scene's tokens leave out
                what only one shape shows and spread one shape over several tokens; this gives each shape
                one token that names it (docs/figures_history.md: "Four releases ago: where the built-in
                recipe's errors were, and one token per shape."). Needs the image_text pair.
        Both sharpen the alignment stage's own figures on the built-in and the digits task, yet SFT from it
        scored lower on selection records (docs/figures_history.md: "Each medium aligned with its own
        caption"), so both are off by default.
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
        if hard_negatives and medium_captions:
            raise ValueError("hard_negatives: records' image_negatives / audio_negatives are their caption made "
                             "wrong, and medium_captions pairs each medium with another text; use one of the two")
        if caption_words < 0:
            raise ValueError(f"caption_words: expected a weight >= 0, got {caption_words}")
        if regions < 0 or (regions and "image_text" not in chosen):
            raise ValueError(f"regions: expected a weight >= 0, and the image_text pair beside a positive one; "
                             f"got {regions} with pairs {chosen}")
        if regions:  # what a patch token that stands for no region is aligned with (DETR's no-object class)
            self.no_region = nn.Parameter(torch.randn(embed_dim) * embed_dim ** -0.5)
        worded = [key.split("_")[0] for key in chosen if key.endswith("_text")] if caption_words else []
        self.word_heads = nn.ModuleDict({m: nn.Linear(widths[m], self.model.text_encoder.vocab_size)
                                         for m in worded})

    def pairs(self, batch: dict, encoded: Optional[dict] = None) -> dict[str, Pair]:
        """{"image_text": Pair(a [B, E], b [B, E], rows [B] bool, ...)} for every pair of modalities in the batch.

        Rows where either side is absent stay in place (masked by `rows`), so every rank of a
        data-parallel run holds B rows per pair; a modality absent from the batch gives B masked
        zero rows, and the key set is the same on every rank. A medium–text pair carries the batch's
        hard negatives for that medium (`image_negatives` of the records), projected as the captions are.
        """
        encoded = self.model.encode(**media_inputs(batch)) if encoded is None else encoded
        B = batch_size(batch)
        out = {}
        for key in self.logit_scales:
            first, second = key.split("_")
            (a, a_present, _), (b, b_present, b_mean) = (self._embed(encoded, m, B) for m in (first, second))
            keys = batch.get("text_keys")
            if second == "text" and self._own_captions(batch, first):
                b, b_present, b_mean = self._embed_text(batch[f"{first}_text_ids"], batch[f"{first}_text_mask"])
                keys = batch[f"{first}_text_keys"]
            negatives = rows = None
            if self.hparams.hard_negatives and second == "text" and f"{first}_negative_ids" in batch:
                states = self.model.text_encoder(batch[f"{first}_negative_ids"], batch[f"{first}_negative_mask"])
                negatives = self.projections["text"](states.pooled) - b_mean  # [N, E]
                rows = batch[f"{first}_negative_rows"]  # [N]
            keys = keys if second == "text" and self.hparams.same_text_positives else None
            out[key] = Pair(a, b, a_present & b_present, negatives, rows, keys)
        return out

    def _own_captions(self, batch: dict, medium: str) -> bool:
        """Whether `medium` is paired with its records' own captions (`{medium}_text_ids`) in this batch."""
        return self.hparams.medium_captions and f"{medium}_text_ids" in batch

    def _embed_text(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_embed` for a text batch other than text_ids (a medium's own captions): ids / mask [B, L]."""
        return self._centred(self.projections["text"](self.model.text_encoder(ids, mask).pooled), mask.any(1))

    def _centred(self, projected: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(projected [B, E] less the mean of its present rows [1, E] — zeros unless `center`, present [B], mean)."""
        mean = projected.new_zeros(1, projected.shape[-1])
        if self.hparams.center and present.any():
            mean = projected[present].mean(dim=0, keepdim=True)
        return projected - mean, present, mean

    def _embed(self, encoded: dict, modality: str, B: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(projected pooled states [B, E], present [B], the mean subtracted [1, E] — zeros unless `center`);
        zeros and absent when the batch lacks the modality."""
        projection = self.projections[modality]
        if modality in encoded:
            return self._centred(projection(encoded[modality].pooled), encoded[modality].present)  # [B, E], [B]
        zeros = projection(projection.weight.new_zeros(B, projection.in_features))
        return zeros, torch.zeros(B, dtype=torch.bool, device=zeros.device), zeros[:1]

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Each pair's InfoNCE over the rows holding both sides on all ranks; pairs with < 2 such rows add 0."""
        rank, world = self.global_rank, self.trainer.world_size if self._trainer is not None else 1
        encoded = self.model.encode(**media_inputs(batch))
        pairs = self.pairs(batch, encoded)
        counts = torch.stack([pair.rows.sum() for pair in pairs.values()])  # [K]
        if world > 1:
            counts = summed_over_ranks(counts)
        losses = {key: clip_loss(pair.a, pair.b, self.logit_scales[key], rank, world, valid=pair.rows,
                                 b_negatives=pair.negatives, negative_rows=pair.negative_rows, b_keys=pair.b_keys)
                  for key, pair in pairs.items()}
        counted = [key for key, n in zip(pairs, counts.tolist()) if n >= 2]
        if not counted:
            raise ValueError("batch: no modality pair has two or more rows; contrastive training needs paired records")
        # A pair with < 2 rows has a loss of exactly 0; summing it keeps every parameter in the graph (DDP).
        total = sum(losses.values()) / len(counted)
        words = self.caption_word_losses(batch, encoded)
        if words:
            total = total + self.hparams.caption_words * sum(words.values()) / len(words)
        regions = self.region_terms(batch, encoded)
        if "region_text" in regions:
            total = total + self.hparams.regions * regions["region_text"]
        return {"loss": total, **{key: losses[key] for key in counted}, **words, **regions}

    def region_terms(self, batch: dict, encoded: dict) -> dict[str, torch.Tensor]:
        """{"region_text": cross-entropy, "region_accuracy": share right} over the patch tokens of the images
        whose records carry regions: the token at a region's centre (`patch_regions`) must pick that region's
        text among the batch's distinct region texts, every other token the learned "no region" embedding
        (DETR's no-object class); cosine logits [T, U + 1] at the image–text temperature. {} with a zero weight,
        a loss of 0 with no image in the batch; ValueError when the batch's images carry no regions."""
        if not self.hparams.regions:
            return {}
        if "image" not in encoded or not encoded["image"].present.any():  # 0, the no-region embedding kept in
            return {"region_text": self.no_region.sum() * 0.0}  # the graph (DDP)
        if "region_images" not in batch:
            raise ValueError("regions: ContrastiveModule(regions=...) aligns image regions with their texts, and "
                             "no record of this batch with an image has `regions`")
        vision = self.model.vision
        n_patches = vision.grid[0] * vision.grid[1]
        owner = patch_regions(batch["region_boxes"], batch["region_rows"], batch_size(batch), vision.grid,
                              vision.patch_size)  # [B, P]: the region each token stands for, BACKGROUND or SHARED
        scored = (owner != SHARED) & (batch["region_images"] & encoded["image"].present)[:, None]  # [B, P]
        tokens = encoded["image"].tokens[:, -n_patches:][scored]  # [T, W]
        texts = self.no_region.new_zeros(0, self.no_region.shape[0])  # [U, E]: none when no image has a region
        if len(batch["region_text_ids"]):
            texts = self.projections["text"](self.model.text_encoder(batch["region_text_ids"],
                                                                     batch["region_text_mask"]).pooled)
        a = F.normalize(self.projections["image"](tokens), dim=-1)  # [T, E]
        b = F.normalize(torch.cat([texts, self.no_region[None]]), dim=-1)  # [U + 1, E]
        logits = a @ b.T * self.logit_scales["image_text"].clamp(max=MAX_LOGIT_SCALE).exp()  # [T, U + 1]
        region = owner[scored]  # [T]
        targets = torch.full_like(region, len(texts))  # "no region", where the token stands for none
        targets[region >= 0] = batch["region_text_index"][region[region >= 0]]
        if not len(targets):  # every patch shared by two centres: 0, with the parameters kept in the graph
            return {"region_text": logits.sum() * 0.0}
        return {"region_text": F.cross_entropy(logits, targets),
                "region_accuracy": logits.argmax(-1).eq(targets).float().mean()}

    def caption_word_losses(self, batch: dict, encoded: dict) -> dict[str, torch.Tensor]:
        """{"image_words": loss} for each medium with a word head: over the rows holding the medium and a
        caption, cross-entropy of the head's vocabulary logits [B, V] against the caption's bag of tokens
        (every distinct real token of text_ids, each with the same share). A batch without such rows adds
        0 and keeps the head in the graph (DDP)."""
        out = {}
        for medium, head in self.word_heads.items():
            own = self._own_captions(batch, medium)
            if medium not in encoded or ("text_ids" not in batch and not own):
                continue
            logits = head(encoded[medium].pooled)  # [B, V]
            ids, mask = (batch[f"{medium}_text_ids"], batch[f"{medium}_text_mask"]) if own \
                else (batch["text_ids"], batch["text_mask"])
            bag = token_bag(ids, mask, logits.shape[-1])  # [B, V]
            rows = encoded[medium].present & mask.any(1)  # [B]
            if rows.any():
                out[f"{medium}_words"] = bag_of_tokens_loss(logits[rows].log_softmax(-1), bag[rows])
            else:
                out[f"{medium}_words"] = logits.sum() * 0.0
        return out

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        encoded = self.model.encode(**media_inputs(batch))
        pairs = {key: pair for key, pair in self.pairs(batch, encoded).items() if pair.rows.sum() >= 2}
        terms = {key: clip_loss(pair.a, pair.b, self.logit_scales[key], valid=pair.rows,
                                b_negatives=pair.negatives, negative_rows=pair.negative_rows, b_keys=pair.b_keys)
                 for key, pair in pairs.items()}
        metrics = {"loss": sum(terms.values()) / len(terms), **terms, **self.caption_word_losses(batch, encoded),
                   **self.region_terms(batch, encoded)}
        for key, pair in pairs.items():
            first, second = key.split("_")
            keys = pair.b_keys[pair.rows] if pair.b_keys is not None else None
            metrics[f"r1_{first}2{second}"], metrics[f"r1_{second}2{first}"] = recall_at_1(
                pair.a[pair.rows], pair.b[pair.rows], keys)
            if pair.negatives is not None:  # how often the medium's own caption beats every one of its negatives
                metrics[f"{first}_beats_negatives"] = beats_negatives(pair)
        self._log_terms(metrics, "val", batch)
