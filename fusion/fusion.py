"""The fusion stage: project each modality (image patch tokens optionally with their 2-D positions), optionally
resample, fuse pairwise, then hierarchically."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from timm.layers import build_sincos2d_pos_embed
from torch import nn

from mmr1.config import FusionConfig
from mmr1.encoders.output import EncoderOutput
from mmr1.fusion.hierarchical import HierarchicalFusion
from mmr1.fusion.pairwise import PairwiseFusion
from mmr1.fusion.resampler import PerceiverResampler

MODALITIES = ("image", "audio", "text")  # the order of the fused prefix


@dataclass
class FusionOutput:
    """The fused prefix: the present modalities' tokens side by side, in MODALITIES order."""

    tokens: torch.Tensor  # [B, P, width]
    mask: torch.Tensor  # [B, P] bool, True = a real token
    spans: dict[str, tuple[int, int]]  # modality -> its columns [start, end) of tokens


class Fusion(nn.Module):
    """Any subset of the configured modalities -> one fused prefix of width cfg.width.

    image_grid: (rows, columns) of the image encoder's patch tokens, which `cfg.image_positions` needs."""

    def __init__(self, cfg: FusionConfig, input_widths: Mapping[str, int],
                 image_grid: tuple[int, int] | None = None) -> None:
        super().__init__()
        unknown = sorted(set(input_widths) - set(MODALITIES))
        if unknown or not input_widths:
            raise ValueError(
                f"input_widths: modalities must be a non-empty subset of {MODALITIES}, got {sorted(input_widths)}"
            )
        self.modalities = tuple(m for m in MODALITIES if m in input_widths)
        self.input_widths = {m: input_widths[m] for m in self.modalities}
        self.output_width = cfg.width
        self.input_proj = nn.ModuleDict({m: nn.Linear(w, cfg.width) for m, w in self.input_widths.items()})
        self.type_embed = nn.ParameterDict({m: nn.Parameter(torch.zeros(cfg.width)) for m in self.modalities})
        positions = None
        if cfg.image_positions and "image" in self.modalities:
            if image_grid is None:
                raise ValueError("fusion.image_positions: needs the image encoder's patch grid (image_grid)")
            positions = build_sincos2d_pos_embed(list(image_grid), dim=cfg.width)  # [rows * columns, width]
        self.register_buffer("image_positions", positions, persistent=False)
        self.resamplers = nn.ModuleDict({
            m: PerceiverResampler(cfg.width, cfg.n_heads, cfg.resampler_tokens, cfg.dropout) for m in self.modalities
        }) if cfg.resampler_tokens > 0 else None
        self.pairwise = PairwiseFusion(self.modalities, cfg.width, cfg.n_heads, cfg.dropout)
        self.hierarchical = HierarchicalFusion(cfg.width, cfg.n_heads, cfg.dropout) if cfg.hierarchical else None

    def embed(self, inputs: Mapping[str, EncoderOutput]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Check the inputs; project each to width, resample if configured, add its type embedding, zero padding."""
        self._check(inputs)
        tokens, masks = {}, {}
        for m in self.modalities:
            if m not in inputs:
                continue
            x, mask = self.input_proj[m](inputs[m].tokens), inputs[m].mask  # [B, L, D], [B, L]
            if m == "image" and self.image_positions is not None:
                x = self._add_image_positions(x)
            if self.resamplers is not None:
                x, mask = self.resamplers[m](x, mask)  # [B, K, D], [B, K]
            x = x + self.type_embed[m]  # [B, L, D]
            tokens[m] = x.masked_fill(~mask[..., None], 0.0)  # padding never reaches fusion
            masks[m] = mask
        return tokens, masks

    def _add_image_positions(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, D]: the patch tokens (row-major), after a class token when L is one more -> x + positions."""
        n = self.image_positions.shape[0]
        if x.shape[1] not in (n, n + 1):
            raise ValueError(f"image: fusion.image_positions expects {n} patch tokens (or a class token and {n}), "
                             f"got {x.shape[1]}")
        return torch.cat([x[:, :-n], x[:, -n:] + self.image_positions], dim=1)  # [B, L, D]

    def forward(self, inputs: Mapping[str, EncoderOutput]) -> FusionOutput:
        """inputs: modality -> EncoderOutput (tokens [B, L_m, input_width], mask [B, L_m]) -> FusionOutput."""
        tokens, masks = self.embed(inputs)
        fused = self.pairwise(tokens, masks)
        x = torch.cat(list(fused.values()), dim=1)  # [B, P, D]
        mask = torch.cat(list(masks.values()), dim=1)  # [B, P]
        if self.hierarchical is not None:
            context = torch.cat([*tokens.values(), x], dim=1)  # [B, 2P, D]: unimodal + pairwise
            x = self.hierarchical(x, context, torch.cat([mask, mask], dim=1))  # [B, P, D]
        spans, start = {}, 0
        for m, t in tokens.items():
            spans[m] = (start, start + t.shape[1])
            start += t.shape[1]
        return FusionOutput(tokens=x, mask=mask, spans=spans)

    def _check(self, inputs: Mapping[str, EncoderOutput]) -> None:
        if not inputs:
            raise ValueError(f"fusion: no modality given; expected some of {self.modalities}")
        unknown = sorted(set(inputs) - set(self.modalities))
        if unknown:
            raise ValueError(f"fusion: modality {unknown} not configured; configured: {self.modalities}")
        batch = None
        for m in self.modalities:
            if m not in inputs:
                continue
            shape, width = tuple(inputs[m].tokens.shape), self.input_widths[m]
            batch = shape[0] if batch is None else batch
            if shape[0] != batch or shape[2] != width:
                raise ValueError(f"{m}: expected tokens [B={batch}, L, {width}], got {list(shape)}")
