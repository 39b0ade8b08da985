"""One torch-free, serialisable configuration for the whole multimodal model.

Presets are looked up by name (`Config.from_name("tiny")`), read from a JSON file
(`Config.from_file`) or from a checkpoint folder (`Config.from_checkpoint`).
Derived values are filled in `__post_init__`; inconsistent sizes raise a
ValueError that names the field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

SPECIAL_TOKENS = (
    "<pad>", "<s>", "</s>", "<unk>", "<mask>", "<image>", "<audio>",
    "<think>", "</think>", "<answer>", "</answer>",
)


def _require(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{name}: {message}")


def _divisible(a: int, b: int, name_a: str, name_b: str) -> None:
    _require(b > 0, name_b, f"must be positive, got {b}")
    _require(a % b == 0, name_a, f"{name_a}={a} must be divisible by {name_b}={b}")


@dataclass
class VisionConfig:
    """A timm ViT: either a named timm model or a custom one from the sizes below."""

    timm_name: Optional[str] = None  # e.g. "vit_tiny_patch16_224"; None builds a custom ViT
    image_size: int = 32  # square input side in pixels
    patch_size: int = 8  # square patch side; image_size must be a multiple of it
    width: int = 64  # embedding width of the ViT
    depth: int = 2  # transformer blocks
    n_heads: int = 2  # attention heads
    mlp_ratio: float = 4.0  # hidden width of the ViT MLP / width
    stem: Literal["patch", "conv"] = "patch"  # patch: one linear patch projection (ViT); conv: stride-2 3×3
    # convolutions down to the patch grid (Xiao et al. 2021, "Early Convolutions Help Transformers See Better")
    pool: Literal["token", "avg"] = "token"  # the pooled state (contrastive objectives): the class token's, or the
    # mean of the patch tokens with no class token (timm's global_pool="avg"), which depends on the image from
    # the first step
    keep_class_token: bool = False  # the class token (the pooled state contrastive stages align) goes on to fusion
    # and the core in front of the patch tokens; off, only the patch tokens reach the core
    weights: Optional[str] = None  # local timm-format state dict (.safetensors or .pth)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # normalisation the ViT expects
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        _require(self.stem in ("patch", "conv"), "vision.stem", f"must be 'patch' or 'conv', got {self.stem!r}")
        _require(self.pool in ("token", "avg"), "vision.pool", f"must be 'token' or 'avg', got {self.pool!r}")
        _require(not self.keep_class_token or self.timm_name is not None or self.pool == "token",
                 "vision.keep_class_token", f"needs a class token (pool: 'token'), got pool {self.pool!r}")
        if self.timm_name is None:
            _divisible(self.image_size, self.patch_size, "vision.image_size", "vision.patch_size")
        if self.stem == "conv":
            _require(self.timm_name is None, "vision.stem", "'conv' builds a custom ViT; it cannot be used with timm_name")
            _require(self.patch_size > 1 and self.patch_size & (self.patch_size - 1) == 0, "vision.patch_size",
                     f"must be a power of two for the conv stem (one stride-2 convolution per halving), got "
                     f"{self.patch_size}")
            _divisible(self.width, self.n_heads, "vision.width", "vision.n_heads")

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass
class TextEncoderConfig:
    """A transformers RoBERTa/BERT encoder, from these sizes or a local HF folder."""

    arch: Literal["roberta", "bert"] = "roberta"
    pretrained: Optional[str] = None  # local Hugging Face folder; overrides the sizes below
    vocab_size: int = 0  # 0: use the core's vocabulary (the same tokenizer)
    width: int = 64
    depth: int = 2
    n_heads: int = 2
    intermediate_size: int = 128
    max_positions: int = 128  # longest text the encoder accepts

    def __post_init__(self) -> None:
        if self.pretrained is None:
            _divisible(self.width, self.n_heads, "text.width", "text.n_heads")


@dataclass
class AudioConfig:
    """Log-mel → conv subsampling ×4 → torchaudio Conformer."""

    sample_rate: int = 16000  # every input is resampled to this rate
    n_mels: int = 40
    n_fft: int = 400  # 25 ms at 16 kHz
    hop_length: int = 160  # 10 ms at 16 kHz
    width: int = 64  # Conformer input width
    depth: int = 2  # Conformer layers
    n_heads: int = 2
    ffn_dim: int = 128
    conv_kernel: int = 15  # depthwise convolution kernel (odd)
    dropout: float = 0.0
    freq_mask: int = 8  # SpecAugment: widest frequency mask (0 disables), training only
    time_mask: int = 20  # SpecAugment: widest time mask in frames (0 disables), training only
    vtlp: float = 0.0  # vocal tract length perturbation: frequencies warped by a factor in [1 - vtlp, 1 + vtlp], training only
    max_seconds: float = 30.0  # longest clip accepted
    normalize: str = "utterance"  # log-mel: one mean/std per clip; "mel": per mel band over time (CMVN)
    cepstra: int = 0  # >0: each frame's log-mel keeps only its first `cepstra` DCT coefficients (projected back
    # onto the n_mels bands: liftering, as MFCCs keep 13), the spectral envelope without the pitch harmonics;
    # 0 keeps the log-mel as it is

    def __post_init__(self) -> None:
        _divisible(self.width, self.n_heads, "audio.width", "audio.n_heads")
        _require(self.normalize in ("utterance", "mel"), "audio.normalize",
                 f"must be 'utterance' or 'mel', got {self.normalize!r}")
        _require(self.conv_kernel % 2 == 1, "audio.conv_kernel", f"must be odd, got {self.conv_kernel}")
        _require(0.0 <= self.vtlp < 0.5, "audio.vtlp", f"must be in [0, 0.5), got {self.vtlp}")
        _require(0 <= self.cepstra <= self.n_mels, "audio.cepstra",
                 f"must be in [0, n_mels={self.n_mels}], got {self.cepstra}")


@dataclass
class FusionConfig:
    """Gated cross-attention fusion: pairwise, then one hierarchical joint layer."""

    width: int = 64  # common width every modality is projected to
    n_heads: int = 2
    hierarchical: bool = True  # add the joint layer over all unimodal + pairwise outputs
    resampler_tokens: int = 0  # >0: a perceiver resampler bounds tokens per modality to this
    dropout: float = 0.0
    image_positions: bool = False  # add a fixed 2-D sin-cos position embedding (MAE's; timm's
    # build_sincos2d_pos_embed) to the projected image patch tokens, so each token's row and column reach the
    # core as features rather than only through its place in the sequence; adds no weights
    vocab_prefix: bool = False  # the projection into the core is a softmax over the core's vocabulary times its
    # token embedding matrix: each prefix token is a mixture of the core's own word embeddings (Ovis's
    # probabilistic visual tokens, over the core's vocabulary), which a pretrained core reads as it reads text

    def __post_init__(self) -> None:
        _divisible(self.width, self.n_heads, "fusion.width", "fusion.n_heads")
        _require(not self.image_positions or self.width % 4 == 0, "fusion.image_positions",
                 f"needs fusion.width divisible by 4 (a sin and a cos per row and column band), got {self.width}")


@dataclass
class CoreConfig:
    """The decoder reasoning core; field names follow Llama/Qwen2 where they exist."""

    vocab_size: int = 512
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int = 2  # GQA: n_heads must be a multiple; == n_heads is plain MHA
    head_dim: int = 0  # 0: d_model // n_heads
    intermediate_size: int = 128  # SwiGLU hidden width
    max_seq_len: int = 512  # longest prefix + text sequence
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    qkv_bias: bool = False  # Qwen2 has biases on q/k/v
    tie_embeddings: bool = True  # LM head shares the token embedding
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    # Attention flavour
    attention: Literal["gqa", "mla"] = "gqa"
    kv_lora_rank: int = 32  # MLA: width of the compressed KV latent (what is cached)
    q_lora_rank: int = 0  # MLA: 0 projects queries at full rank
    qk_rope_head_dim: int = 8  # MLA: decoupled RoPE key/query width per head
    qk_nope_head_dim: int = 16  # MLA: non-rotary query/key width per head
    v_head_dim: int = 16  # MLA: value width per head
    # Mixture of experts (DeepSeek-MoE); n_routed_experts == 0 keeps dense SwiGLU
    n_routed_experts: int = 0
    n_shared_experts: int = 1
    n_experts_per_token: int = 2  # top-k routed experts per token
    moe_intermediate_size: int = 64  # hidden width of each expert
    first_dense_layers: int = 0  # the first k layers stay dense
    bias_update_rate: float = 1e-3  # aux-loss-free balancing step size γ
    # Iterative Refinement Module
    n_refine_iters: int = 0  # 0 disables it
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            _divisible(self.d_model, self.n_heads, "core.d_model", "core.n_heads")
            self.head_dim = self.d_model // self.n_heads
        _require(self.n_kv_heads > 0, "core.n_kv_heads", f"must be positive, got {self.n_kv_heads}")
        _divisible(self.n_heads, self.n_kv_heads, "core.n_heads", "core.n_kv_heads")
        _require(self.head_dim % 2 == 0, "core.head_dim", f"must be even for RoPE, got {self.head_dim}")
        _require(self.attention in ("gqa", "mla"), "core.attention", f"must be 'gqa' or 'mla', got {self.attention!r}")
        if self.attention == "mla":
            _require(self.qk_rope_head_dim % 2 == 0, "core.qk_rope_head_dim", "must be even for RoPE")
        if self.n_routed_experts:
            _require(
                0 < self.n_experts_per_token <= self.n_routed_experts,
                "core.n_experts_per_token",
                f"must be in 1..n_routed_experts={self.n_routed_experts}, got {self.n_experts_per_token}",
            )
        _require(self.n_refine_iters >= 0, "core.n_refine_iters", "must be >= 0")
        _require(self.vocab_size > 0, "core.vocab_size", "must be positive")

    @property
    def is_moe_layer(self) -> list[bool]:
        return [bool(self.n_routed_experts) and i >= self.first_dense_layers for i in range(self.n_layers)]


@dataclass
class Config:
    """The whole model. A modality set to None is not built."""

    name: str = "custom"
    vision: Optional[VisionConfig] = field(default_factory=VisionConfig)
    text: Optional[TextEncoderConfig] = field(default_factory=TextEncoderConfig)
    audio: Optional[AudioConfig] = field(default_factory=AudioConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    core: CoreConfig = field(default_factory=CoreConfig)
    n_classes: int = 0  # >0 adds a classification head on the pooled state

    def __post_init__(self) -> None:
        for key, cls in (("vision", VisionConfig), ("text", TextEncoderConfig), ("audio", AudioConfig),
                         ("fusion", FusionConfig), ("core", CoreConfig)):
            value = getattr(self, key)
            if isinstance(value, dict):
                setattr(self, key, _from_dict(cls, value, key))
        if self.text is not None and self.text.vocab_size == 0 and self.text.pretrained is None:
            self.text.vocab_size = self.core.vocab_size

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in ("image", "audio", "text") if getattr(self, _SECTION[m]) is not None)

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "Config":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        data = json.loads(json.dumps(PRESETS[name]))  # deep copy
        _merge(data, overrides)
        return _from_dict(cls, {"name": name, **data}, "config")

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        """A Config from `to_dict()`, or from a checkpoint folder's config.json: its `architecture`
        MultimodalModel as is, ReasoningCore (`core.save_pretrained`) as a text-only model around the core."""
        data = dict(data)
        architecture = data.pop("architecture", "MultimodalModel")
        if architecture == "ReasoningCore":
            data = {"name": "core", "vision": None, "text": None, "audio": None, **data}
        elif architecture != "MultimodalModel":
            raise ValueError(f"config: architecture is {architecture!r}; expected 'MultimodalModel' or 'ReasoningCore'")
        return _from_dict(cls, data, "config")

    @classmethod
    def from_file(cls, path: str | Path) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config file")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path) -> "Config":
        """The config of a checkpoint folder (its config.json) or of an objective's Lightning `.ckpt`."""
        path = Path(checkpoint)
        if path.suffix == ".ckpt" and path.is_file():
            from mmr1.checkpoint import safe_torch_load  # torch, only for a .ckpt

            stored = safe_torch_load(path).get("mmr1_config")
            if stored is None:
                raise ValueError(f"{path}: no mmr1_config; expected a checkpoint written by an mmr1 objective")
            return cls.from_dict(stored)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no config.json; expected a folder written by save_pretrained or a .ckpt")
        return cls.from_file(path / "config.json")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


_SECTION = {"image": "vision", "audio": "audio", "text": "text"}


def _from_dict(cls: type, data: dict, where: str):
    if data is None:
        return None
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(known)}")
    return cls(**data)


def _merge(base: dict, overrides: dict) -> None:
    """Nested update: {"core": {"n_layers": 4}} changes one field of a section."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


PRESETS: dict[str, dict] = {
    # Trains on a 2-core CPU in minutes.
    "tiny": dict(
        vision=dict(image_size=32, patch_size=8, width=64, depth=2, n_heads=2),
        text=dict(width=64, depth=2, n_heads=2, intermediate_size=128, max_positions=128),
        audio=dict(sample_rate=16000, n_mels=40, width=64, depth=2, n_heads=2, ffn_dim=128, conv_kernel=15),
        fusion=dict(width=64, n_heads=2, resampler_tokens=16),
        core=dict(vocab_size=512, n_layers=4, d_model=128, n_heads=4, n_kv_heads=2, intermediate_size=352,
                  max_seq_len=512, n_refine_iters=1),
    ),
    # A laptop-sized research model.
    "small": dict(
        vision=dict(image_size=64, patch_size=8, width=192, depth=6, n_heads=3),
        text=dict(width=256, depth=4, n_heads=4, intermediate_size=1024, max_positions=256),
        audio=dict(sample_rate=16000, n_mels=80, width=192, depth=6, n_heads=4, ffn_dim=768, conv_kernel=31),
        fusion=dict(width=256, n_heads=4, resampler_tokens=32),
        core=dict(vocab_size=8192, n_layers=8, d_model=512, n_heads=8, n_kv_heads=2, intermediate_size=1408,
                  max_seq_len=1024, n_refine_iters=1),
    ),
    # ViT-B/16 vision, RoBERTa-base-sized text, a ~300M-parameter core.
    "base": dict(
        vision=dict(timm_name="vit_base_patch16_224", image_size=224, patch_size=16, width=768, depth=12,
                    n_heads=12, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        text=dict(width=768, depth=12, n_heads=12, intermediate_size=3072, max_positions=514),
        audio=dict(sample_rate=16000, n_mels=80, width=256, depth=12, n_heads=4, ffn_dim=1024, conv_kernel=31),
        fusion=dict(width=768, n_heads=12, resampler_tokens=64),
        core=dict(vocab_size=32000, n_layers=16, d_model=1024, n_heads=16, n_kv_heads=4, intermediate_size=2816,
                  max_seq_len=2048, n_refine_iters=1),
    ),
}
