"""Masked modelling: MLM on the text encoder, MIM on the ViT (normalised-pixel regression or the patches'
visual words from a fitted codebook), MAM on log-mel frames."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mmr1.objectives.base import ObjectiveModule
from mmr1.objectives.codebook import PatchCodebook
from mmr1.losses.language import mlm_loss
from mmr1.losses.masked import masked_regression_loss, masked_token_loss, normalised_patches
from mmr1.objectives.masking import AUDIO_STRIDE, frame_blocks, mask_frames, random_mask, vit_masked_tokens

MIM_TARGETS = ("pixels", "tokens")


class MaskedModule(ObjectiveModule):
    """loss = λ_mlm·MLM + λ_mim·MIM + λ_mam·MAM over whatever modalities a batch holds; each term is logged."""

    def __init__(self, *args, mlm_weight: float = 1.0, mim_weight: float = 1.0, mam_weight: float = 1.0,
                 mim_ratio: float = 0.5, mam_ratio: float = 0.3, mim_target: Literal["pixels", "tokens"] = "pixels",
                 codebook_size: int = 256, codebook_decay: float = 0.99, **kwargs):
        """
        Args:
            *_weight: λ of each term (0 turns it off).
            mim_ratio / mam_ratio: share of patches / audio tokens masked.
            mim_target: what MIM predicts for a masked patch: "pixels" regresses its normalised pixels (MAE);
                "tokens" classifies it as the nearest of `codebook_size` visual words, a codebook of
                normalised patches this module fits by online k-means on each training batch (see PatchCodebook).
            codebook_size / codebook_decay: the number of visual words; how fast old batches fade from them.
        """
        if mim_target not in MIM_TARGETS:
            raise ValueError(f"mim_target: unknown {mim_target!r}; expected one of {list(MIM_TARGETS)}")
        super().__init__(*args, **kwargs)
        m = self.model
        self.mlm_head = nn.Linear(m.text_encoder.width, m.text_encoder.vocab_size) if m.text_encoder else None
        if m.vision is not None:
            patch = m.vision.patch_size
            self.mask_token = nn.Parameter(torch.zeros(m.vision.width))
            if mim_target == "tokens":
                self.codebook = PatchCodebook(codebook_size, patch * patch * 3, codebook_decay)
                self.mim_head = nn.Linear(m.vision.width, codebook_size)
            else:
                self.mim_head = nn.Linear(m.vision.width, patch * patch * 3)
        if m.audio is not None:
            self.mam_head = nn.Linear(m.audio.width, AUDIO_STRIDE * m.audio.cfg.n_mels)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        h, m, terms = self.hparams, self.model, {}
        if h.mlm_weight and "text_labels" in batch:
            tokens = m.encode(text_ids=batch["text_ids"], text_mask=batch["text_mask"])["text"].tokens  # [B, L, D]
            terms["mlm"] = mlm_loss(self.mlm_head(tokens), batch["text_labels"])
        if h.mim_weight and "pixel_values" in batch:
            terms["mim"] = self.mim(batch["pixel_values"], batch["image_mask"])
        if h.mam_weight and "audio_values" in batch:
            terms["mam"] = self.mam(batch["audio_values"], batch["audio_lengths"])
        if not terms:
            raise ValueError("batch: nothing to mask (no text_labels, pixel_values or audio_values with weight > 0)")
        weights = {"mlm": h.mlm_weight, "mim": h.mim_weight, "mam": h.mam_weight}
        return {"loss": sum(weights[k] * v for k, v in terms.items()), **terms}

    def mim(self, pixels: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        """Predict the masked patches of the images present: their normalised pixels, or their codes
        after a k-means step of the codebook on the batch's patches (training only)."""
        vit = self.model.vision.model
        patches = normalised_patches(pixels, self.model.vision.patch_size)  # [B, N, p*p*3]
        present = image_mask[:, None].expand(patches.shape[:2])  # [B, N]
        patch_mask = random_mask(present, self.hparams.mim_ratio)  # [B, N]
        tokens = vit_masked_tokens(vit, pixels, patch_mask, self.mask_token)  # [B, N, D]
        if self.hparams.mim_target == "pixels":
            return masked_regression_loss(self.mim_head(tokens), patches, patch_mask)
        if self.training:
            self.codebook.update(patches[present])  # [M, p*p*3]
        return masked_token_loss(self.mim_head(tokens), self.codebook(patches), patch_mask)

    def mam(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Regress the log-mel frames under masked audio tokens from the encoder's states."""
        audio = self.model.audio
        features, frame_lengths = audio.log_mel(waveform, lengths)  # [B, T, n_mels], [B]
        token_lengths = audio.subsample.output_lengths(frame_lengths)  # [B]
        n_tokens = int(audio.subsample.output_lengths(torch.tensor(features.shape[1])))
        valid = torch.arange(n_tokens, device=features.device) < token_lengths[:, None]  # [B, T']
        block_mask = random_mask(valid, self.hparams.mam_ratio)  # [B, T']
        tokens = audio.forward_features(mask_frames(features, block_mask), frame_lengths).tokens  # [B, T', D]
        return masked_regression_loss(self.mam_head(tokens), frame_blocks(features, n_tokens), block_mask)
