"""The whole multimodal model: encoders → gated cross-attention fusion → prefix → reasoning core → heads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mmr1.config import Config
from mmr1.core import CoreOutput, ReasoningCore
from mmr1.encoders.output import EncoderOutput
from mmr1.heads import ClassificationHead, masked_mean

# The model's trainable parts by name (`freeze`, LoRA `parts` and `modules_to_save`) -> its attributes.
PARTS = {"vision": ("vision",), "text": ("text_encoder",), "audio": ("audio",),
         "fusion": ("fusion", "prefix_proj"), "core": ("core",)}

MEDIA_KEYS = ("pixel_values", "image_mask", "audio_values", "audio_lengths", "text_ids", "text_mask")


def media_inputs(batch: dict) -> dict:
    """The model's media inputs present in a batch."""
    return {k: batch[k] for k in MEDIA_KEYS if k in batch}


@dataclass
class Prefix:
    embeds: torch.Tensor  # [B, P, d_model], the fused multimodal tokens in the core's width
    mask: torch.Tensor  # [B, P] bool
    encoded: dict[str, EncoderOutput]  # each modality's encoder output (pooled states for contrastive)


class MultimodalModel(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        from mmr1.encoders.audio import AudioEncoder
        from mmr1.encoders.text import TextEncoder
        from mmr1.encoders.vision import VisionEncoder
        from mmr1.fusion import Fusion

        self.config = config
        self.vision = VisionEncoder(config.vision) if config.vision is not None else None
        self.audio = AudioEncoder(config.audio) if config.audio is not None else None
        self.text_encoder = TextEncoder(config.text) if config.text is not None else None
        widths = {m: enc.width for m, enc in self._encoders().items()}
        self.fusion = Fusion(config.fusion, widths, self.vision.grid if self.vision is not None else None) \
            if widths else None
        prefix_width = config.core.vocab_size if config.fusion.vocab_prefix else config.core.d_model
        self.prefix_proj = nn.Linear(config.fusion.width, prefix_width) if widths else None
        self.core = ReasoningCore(config.core)
        self.classifier = ClassificationHead(config.core.d_model, config.n_classes) if config.n_classes else None

    def _encoders(self) -> dict[str, nn.Module]:
        pairs = (("image", self.vision), ("audio", self.audio), ("text", self.text_encoder))
        return {m: enc for m, enc in pairs if enc is not None}

    # ---- the multimodal prefix --------------------------------------------------------
    def encode(
        self,
        pixel_values: torch.Tensor | None = None,  # [B, 3, H, W]
        image_mask: torch.Tensor | None = None,  # [B] bool, the rows that have an image
        audio_values: torch.Tensor | None = None,  # [B, S] waveform
        audio_lengths: torch.Tensor | None = None,  # [B] samples, 0 = no audio
        text_ids: torch.Tensor | None = None,  # [B, L] for the text encoder
        text_mask: torch.Tensor | None = None,  # [B, L]
        sample_rate: int | None = None,  # of audio_values; default: the config's rate
    ) -> dict[str, EncoderOutput]:
        encoded = {}
        if pixel_values is not None:
            self._require("image", self.vision, "pixel_values")
            encoded["image"] = self.vision(pixel_values, image_mask)
        if audio_values is not None:
            self._require("audio", self.audio, "audio_values")
            if audio_lengths is None:
                audio_lengths = torch.full((audio_values.shape[0],), audio_values.shape[-1], dtype=torch.long,
                                           device=audio_values.device)
            encoded["audio"] = self.audio(audio_values, audio_lengths, sample_rate)
        if text_ids is not None:
            self._require("text", self.text_encoder, "text_ids")
            if text_mask is None:
                text_mask = torch.ones_like(text_ids, dtype=torch.bool)
            encoded["text"] = self.text_encoder(text_ids, text_mask)
        sizes = {m: out.tokens.shape[0] for m, out in encoded.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"inputs: every modality must have the same batch size, got {sizes}")
        return encoded

    def prefix(self, **media) -> Prefix | None:
        """Encode and fuse whatever media are given; None when there are none."""
        encoded = self.encode(**media)
        if not encoded:
            return None
        fused = self.fusion(encoded)
        return Prefix(self.project(fused.tokens), fused.mask, encoded)

    def project(self, fused: torch.Tensor) -> torch.Tensor:
        """fused [B, P, fusion.width] -> [B, P, d_model], the prefix in the core's input space."""
        if self.config.fusion.vocab_prefix:  # each position a mixture of the core's own token embeddings
            return self._vocabulary(fused) @ self.core.embed_tokens.weight  # [B, P, V] @ [V, d_model]
        return self.prefix_proj(fused)  # [B, P, d_model]

    def _vocabulary(self, fused: torch.Tensor) -> torch.Tensor:
        """fused [B, P, fusion.width] -> [B, P, V]: with fusion.vocab_prefix, each position's distribution over
        the core's vocabulary."""
        return self.prefix_proj(fused).softmax(-1)

    def prefix_vocabulary(self, **media) -> tuple[torch.Tensor, torch.Tensor, dict[str, tuple[int, int]]]:
        """With `fusion.vocab_prefix`: the prefix as distributions over the core's vocabulary, without running
        the core: (probabilities [B, P, V], mask [B, P] bool, each modality's span [start, end) of positions)."""
        if not self.config.fusion.vocab_prefix:
            raise ValueError("fusion.vocab_prefix: this model projects its prefix linearly, so it has no "
                             "distributions over the vocabulary (build it with overrides {fusion: {vocab_prefix: true}})")
        encoded = self.encode(**media)
        if not encoded:
            raise ValueError("media: prefix_vocabulary needs an image or audio input")
        fused = self.fusion(encoded)
        return self._vocabulary(fused.tokens), fused.mask, fused.spans

    def _require(self, modality: str, encoder: nn.Module | None, argument: str) -> None:
        if encoder is None:
            raise ValueError(f"{argument}: this model was built without the {modality} modality "
                             f"(config has {list(self.config.modalities)})")

    # ---- forward / generate ---------------------------------------------------------------
    def forward(self, input_ids, attention_mask=None, logits_to_keep: int = 0,
                **media) -> tuple[CoreOutput, Prefix | None]:
        self._check_media_keys(media)
        prefix = self.prefix(**media)
        out = self.core(input_ids, attention_mask,
                        prefix_embeds=None if prefix is None else prefix.embeds,
                        prefix_mask=None if prefix is None else prefix.mask,
                        logits_to_keep=logits_to_keep)
        return out, prefix

    def classify(self, input_ids, attention_mask=None, **media) -> torch.Tensor:
        """Class logits [B, n_classes] from the pooled final text states."""
        if self.classifier is None:
            raise ValueError("n_classes: this model was built without a classification head (n_classes=0)")
        out, _ = self(input_ids, attention_mask, **media)
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        return self.classifier(masked_mean(out.hidden, mask))

    @torch.inference_mode()
    def generate(self, input_ids, attention_mask=None, generation: dict | None = None, **media) -> torch.Tensor:
        """[B, T + new] continuation of left-padded prompts, conditioned on the media."""
        self._check_media_keys(media)
        prefix = self.prefix(**media)
        return self.core.generate(
            input_ids, attention_mask,
            prefix_embeds=None if prefix is None else prefix.embeds,
            prefix_mask=None if prefix is None else prefix.mask,
            **(generation or {}),
        )

    def stream(self, input_ids, attention_mask=None, generation: dict | None = None, **media):
        """Yield [B] next tokens as they are decoded."""
        self._check_media_keys(media)
        with torch.inference_mode():
            prefix = self.prefix(**media)
        yield from self.core.stream(
            input_ids, attention_mask,
            prefix_embeds=None if prefix is None else prefix.embeds,
            prefix_mask=None if prefix is None else prefix.mask,
            **(generation or {}),
        )

    @staticmethod
    def _check_media_keys(media: dict) -> None:
        unknown = sorted(set(media) - set(MEDIA_KEYS) - {"sample_rate"})
        if unknown:
            raise ValueError(f"unknown input(s) {unknown}; expected some of {list(MEDIA_KEYS)}")

    # ---- checkpoints ------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, tokenizer=None, int8: bool = False) -> Path:
        """config.json + model.safetensors (int8 weights with `int8`) + the tokenizer's files."""
        from mmr1.checkpoint import save_pretrained

        return save_pretrained(self, {"architecture": "MultimodalModel", **self.config.to_dict()}, folder, tokenizer,
                               int8)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "MultimodalModel":
        from mmr1.checkpoint import load_pretrained_state, read_config

        model = cls(Config.from_dict(read_config(folder, "MultimodalModel")))
        load_pretrained_state(model, folder)
        return model.eval()
