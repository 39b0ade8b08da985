"""Text encoder: a transformers RoBERTa/BERT, built from the config sizes or loaded from a local folder."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, BertConfig, BertModel, RobertaConfig, RobertaModel

from mmr1.config import TextEncoderConfig
from mmr1.encoders.output import EncoderOutput, masked_mean


class TextEncoder(nn.Module):
    """Wraps a transformers encoder without its pooler; pooled is the masked mean of the tokens."""

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        if cfg.pretrained is not None:
            self.model = AutoModel.from_pretrained(cfg.pretrained, local_files_only=True, add_pooling_layer=False)
            config = self.model.config
            offset = config.pad_token_id + 1 if "roberta" in config.model_type else 0  # RoBERTa skips pad positions
            self.max_positions: int = config.max_position_embeddings - offset
        else:
            if cfg.vocab_size <= 0:
                raise ValueError(f"text.vocab_size: must be positive, got {cfg.vocab_size}")
            sizes = dict(
                vocab_size=cfg.vocab_size, hidden_size=cfg.width, num_hidden_layers=cfg.depth,
                num_attention_heads=cfg.n_heads, intermediate_size=cfg.intermediate_size, pad_token_id=0,
            )
            if cfg.arch == "roberta":  # positions start after the padding index
                config = RobertaConfig(max_position_embeddings=cfg.max_positions + 2, **sizes)
                self.model = RobertaModel(config, add_pooling_layer=False)
            else:
                config = BertConfig(max_position_embeddings=cfg.max_positions, **sizes)
                self.model = BertModel(config, add_pooling_layer=False)
            self.max_positions = cfg.max_positions
        self.width: int = self.model.config.hidden_size
        self.vocab_size: int = self.model.config.vocab_size

    def forward(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> EncoderOutput:
        """text_ids [B, L] long; text_mask [B, L] bool or int, True/1 = a real token."""
        self._check(text_ids, text_mask)
        mask = text_mask.bool()  # [B, L]
        tokens = self.model(input_ids=text_ids, attention_mask=mask.long()).last_hidden_state  # [B, L, D]
        return EncoderOutput(tokens=tokens, mask=mask, pooled=masked_mean(tokens, mask))

    def _check(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> None:
        expected = f"expected integer [B, L] with B > 0 and 0 < L <= {self.max_positions}"
        if text_ids.ndim != 2 or text_ids.numel() == 0 or text_ids.is_floating_point() or text_ids.dtype == torch.bool:
            raise ValueError(f"text_ids: {expected}, got {text_ids.dtype} {list(text_ids.shape)}")
        if text_ids.shape[1] > self.max_positions:
            raise ValueError(f"text_ids: {expected}, got length {text_ids.shape[1]}")
        low, high = int(text_ids.min()), int(text_ids.max())
        if low < 0 or high >= self.vocab_size:
            raise ValueError(f"text_ids: ids must lie in [0, {self.vocab_size}), got values in [{low}, {high}]")
        if text_mask.shape != text_ids.shape or text_mask.is_floating_point():
            raise ValueError(
                f"text_mask: expected bool or int {list(text_ids.shape)} like text_ids, "
                f"got {text_mask.dtype} {list(text_mask.shape)}"
            )
