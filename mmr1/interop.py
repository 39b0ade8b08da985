"""Loading Hugging Face Llama and Qwen2 checkpoint folders into the reasoning core.

The core's parameter names are those of the checkpoints without the leading
"model.", so loading is: read the config, map it to a CoreConfig, strip the prefix.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from mmr1.config import CoreConfig

SUPPORTED = ("llama", "qwen2")


def core_config_from_hf(hf: dict) -> CoreConfig:
    """Map a Llama/Qwen2 config.json to a CoreConfig, refusing what the core cannot honour."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED:
        raise ValueError(f"config.json: model_type {model_type!r} is not supported; expected one of {SUPPORTED}")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"config.json: rope_type {rope_type!r} is not supported; only 'default' RoPE")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ValueError("config.json: attention_bias/mlp_bias on Llama output projections are not supported")
    if model_type == "qwen2" and hf.get("use_sliding_window"):
        raise ValueError("config.json: use_sliding_window=true is not supported")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json: hidden_act {hf['hidden_act']!r} is not supported; expected 'silu'")
    n_heads = hf["num_attention_heads"]
    eos = hf.get("eos_token_id")
    return CoreConfig(
        vocab_size=hf["vocab_size"],
        n_layers=hf["num_hidden_layers"],
        d_model=hf["hidden_size"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // n_heads,
        intermediate_size=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        rope_base=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        qkv_bias=model_type == "qwen2",
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        pad_token_id=hf.get("pad_token_id") or 0,
        bos_token_id=hf.get("bos_token_id") or 0,
        eos_token_id=(eos[0] if isinstance(eos, list) else eos) if eos is not None else 0,
        n_refine_iters=0,
    )


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, or the shards listed in model.safetensors.index.json."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return load_file(single)
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(folder / shard))
        return state
    raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json "
                            "(pickled pytorch_model.bin files are not loaded)")


def core_state_from_hf(state: dict[str, torch.Tensor], cfg: CoreConfig, where: str) -> dict[str, torch.Tensor]:
    """A Llama/Qwen2 state dict under the core's names: "model." stripped, RoPE buffers dropped,
    the LM head supplied from the embedding when the checkpoint ties them."""
    state = {k.removeprefix("model."): v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    if "lm_head.weight" not in state:
        if not cfg.tie_embeddings:
            raise ValueError(f"{where}: tie_word_embeddings is false but the checkpoint has no lm_head.weight")
        state["lm_head.weight"] = state["embed_tokens.weight"]
    return state


def grow_vocab(state: dict[str, torch.Tensor], cfg: CoreConfig, n_old: int) -> dict[str, torch.Tensor]:
    """The core state with embed_tokens/lm_head at cfg.vocab_size rows, rows from `n_old` on (the
    tokens the tokenizer did not have) set to the mean of the first n_old: a new token starts as an
    average token, and the old rows, hence the logits over the old vocabulary, are unchanged."""
    grown = dict(state)
    names = ("embed_tokens.weight",) if cfg.tie_embeddings else ("embed_tokens.weight", "lm_head.weight")
    for name in names:
        weight = state[name]  # [V, D]
        if not weight.shape[0] <= cfg.vocab_size or not 0 < n_old <= weight.shape[0]:
            raise ValueError(f"core.vocab_size: expected {name}'s {weight.shape[0]} rows <= vocab_size "
                             f"{cfg.vocab_size} and 0 < n_old={n_old} <= rows")
        mean = weight[:n_old].mean(dim=0, keepdim=True)  # [1, D]
        grown[name] = torch.cat((weight[:n_old], mean.expand(cfg.vocab_size - n_old, -1)), dim=0)  # [V_new, D]
    if cfg.tie_embeddings:
        grown["lm_head.weight"] = grown["embed_tokens.weight"]
    return grown


def load_core_state(core, state: dict[str, torch.Tensor], where: str) -> None:
    """Load a core state (see `core_state_from_hf`), naming missing and unexpected weights."""
    result = core.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{where}: weights do not match the config: missing {result.missing_keys[:8]}, "
                         f"unexpected {result.unexpected_keys[:8]}")


def load_hf_core(cls, folder: str | Path, dtype: torch.dtype = torch.float32):
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json; expected a Hugging Face checkpoint folder")
    data = json.loads(config_path.read_text())
    if data.get("architecture") == "ReasoningCore":  # a folder written by ReasoningCore.save_pretrained
        return cls.from_pretrained(folder).to(dtype)
    cfg = core_config_from_hf(data)
    core = cls(cfg)
    load_core_state(core, core_state_from_hf(read_hf_weights(folder), cfg, str(folder)), str(folder))
    return core.to(dtype)
