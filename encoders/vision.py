"""Image encoder: a timm ViT (named or built from the config sizes), patch tokens out.

The custom ViT's patches are embedded either by one linear projection (`stem: patch`) or by
timm's convolutional stem (`stem: conv`): stride-2 3×3 convolutions down to the patch grid, which
makes a small ViT trained from scratch learn shapes several times faster (Xiao et al. 2021).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from timm.layers import HybridEmbed, LayerNorm2d
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_hybrid import ConvStem
from torch import nn

from mmr1.config import VisionConfig
from mmr1.encoders.output import EncoderOutput


class VisionEncoder(nn.Module):
    """Wraps a timm ViT with `num_classes=0`; tokens are its patch tokens (after its class token with
    `keep_class_token`), pooled is timm's pooling."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.image_size = cfg.image_size
        if cfg.timm_name is not None:
            self.model = timm.create_model(cfg.timm_name, pretrained=False, num_classes=0, img_size=cfg.image_size)
        else:
            self.model = VisionTransformer(
                img_size=cfg.image_size, patch_size=1 if cfg.stem == "conv" else cfg.patch_size, embed_dim=cfg.width,
                depth=cfg.depth, num_heads=cfg.n_heads, mlp_ratio=cfg.mlp_ratio, num_classes=0,
                global_pool=cfg.pool, class_token=cfg.pool == "token", fc_norm=False,  # tokens leave normalised
                **({"embed_layer": conv_stem(cfg.patch_size, cfg.width)} if cfg.stem == "conv" else {}),
            )
        # the side in pixels of the square each token sees (the conv stem's ViT itself has patch_size 1)
        self.patch_size: int = cfg.patch_size if cfg.timm_name is None else self.model.patch_embed.patch_size[0]
        self.grid: tuple[int, int] = tuple(self.model.patch_embed.grid_size)  # rows, columns of patch tokens
        # (row-major in `tokens`), as timm's patch embedding (or the conv stem's) lays them out
        self.keep_class_token = cfg.keep_class_token
        if self.keep_class_token and getattr(self.model, "cls_token", None) is None:
            raise ValueError(f"vision.keep_class_token: {cfg.timm_name or 'this ViT'} has no class token")
        self.width: int = self.model.num_features
        if cfg.weights is not None:
            self.load_weights(cfg.weights)

    def forward(self, pixel_values: torch.Tensor, image_mask: torch.Tensor | None = None) -> EncoderOutput:
        """pixel_values [B, 3, H, W] float; image_mask [B] bool, False = no image for that sample."""
        B = self._check(pixel_values, image_mask)
        features = self.model.forward_features(pixel_values)  # [B, prefix + N, D]
        tokens = features[:, self.model.num_prefix_tokens:]  # [B, N, D]
        if self.keep_class_token:  # timm puts the class token first, then any register tokens
            tokens = torch.cat([features[:, :1], tokens], dim=1)  # [B, 1 + N, D]
        present = torch.ones(B, dtype=torch.bool, device=tokens.device) if image_mask is None else image_mask
        mask = present[:, None].repeat(1, tokens.shape[1])  # [B, N]
        pooled = self.model.forward_head(features, pre_logits=True) * present[:, None]  # [B, D], 0 when absent
        return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled)

    def load_weights(self, path: str | Path) -> None:
        """Load a timm-format state dict from a local .safetensors or .pth/.pt file; keys and shapes must match."""
        path = Path(path)
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        elif path.suffix in (".pth", ".pt"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ValueError(f"{path}: expected a .safetensors, .pth or .pt file")
        own = self.model.state_dict()
        problems = {
            "missing": sorted(own.keys() - state.keys()),
            "unexpected": sorted(state.keys() - own.keys()),
            "shape mismatch": sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape),
        }
        if any(problems.values()):
            details = "; ".join(f"{kind} keys {keys}" for kind, keys in problems.items() if keys)
            raise ValueError(f"{path}: does not fit {type(self.model).__name__}: {details}")
        self.model.load_state_dict(state)

    def _check(self, pixel_values: torch.Tensor, image_mask: torch.Tensor | None) -> int:
        size = self.image_size
        expected = f"expected float [B, 3, {size}, {size}] with B > 0"
        if pixel_values.ndim != 4 or pixel_values.shape[0] == 0 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(f"pixel_values: {expected}, got {list(pixel_values.shape)}")
        if not pixel_values.is_floating_point():
            raise ValueError(f"pixel_values: {expected}, got dtype {pixel_values.dtype}")
        B = pixel_values.shape[0]
        if image_mask is not None and (image_mask.shape != (B,) or image_mask.dtype != torch.bool):
            raise ValueError(f"image_mask: expected bool [{B}], got {image_mask.dtype} {list(image_mask.shape)}")
        return B


def conv_stem(patch_size: int, width: int):
    """timm's ConvStem (log2(patch_size) stride-2 3×3 convolutions, LayerNorm2d + ReLU between them, the last one
    to `width` channels) as a ViT `embed_layer`: [B, 3, S, S] -> [B, (S / patch_size)², width].

    LayerNorm rather than timm's default BatchNorm, so training and inference compute the same function."""
    depth = int(math.log2(patch_size))
    stem = ConvStem(3, depth, width, stride=(2,) * depth, norm_layer=LayerNorm2d)
    return functools.partial(HybridEmbed, backbone=stem, proj=False)
