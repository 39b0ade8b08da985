"""Checkpoints, read and written in one place: folders (config.json + model.safetensors + tokenizer
files, `save_pretrained`) and the Lightning `.ckpt` files an objective writes while training.

    model, tokenizer = load_model("runs/x/export")           # a folder, or a .ckpt
    export_ckpt("runs/x/checkpoints/last.ckpt", "runs/x/export")

Nothing here unpickles arbitrary objects: weights are safetensors, and a `.ckpt`/`.pt`
is read with `torch.load(weights_only=True)`, which refuses anything but tensors and
plain containers. Non-finite weights (a diverged run) are never saved or loaded.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Iterable, Mapping, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
COMPRESSION_NAME = "compression.json"  # how the weights were compressed (mmr1.compress)


def save_pretrained(model: nn.Module, config: dict, folder: str | Path, tokenizer=None, int8: bool = False) -> Path:
    """Write config.json, model.safetensors (with `int8`: every weight matrix as int8, see `int8_state`)
    and the tokenizer's files."""
    folder = Path(folder)
    state = _unique_state(model)
    require_finite(state, f"{folder}: refusing to save")
    if int8:
        state = int8_state(state)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    save_file(state, str(folder / WEIGHTS_NAME))
    if tokenizer is not None:
        tokenizer.save(folder)
    return folder


def read_config(folder: str | Path, architecture: str) -> dict:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {CONFIG_NAME}; expected a folder written by save_pretrained")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: damaged, not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if data.get("architecture") != architecture:
        raise ValueError(f"{path}: architecture is {data.get('architecture')!r}, expected {architecture!r}")
    return data


INT8_SCALE = ".int8_scale"  # suffix of the fp32 per-row scales stored beside an int8 tensor


def int8_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every floating tensor of 2+ dims (Linear, embedding and conv weights) as int8 with one fp32 scale per
    row (symmetric: row absmax / 127), stored under NAME and NAME.int8_scale; the rest as is."""
    out = {}
    for name, tensor in state.items():
        if tensor.is_floating_point() and tensor.dim() >= 2:
            rows = tensor.float().reshape(tensor.shape[0], -1)  # [R, C]
            scale = rows.abs().amax(dim=1).clamp(min=1e-12) / 127  # [R]
            out[name] = torch.round(rows / scale[:, None]).to(torch.int8).reshape(tensor.shape)
            out[name + INT8_SCALE] = scale
        else:
            out[name] = tensor
    return out


def float_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `int8_state` (fp32 weights from int8 ones and their scales); a plain state as is."""
    scales = {name[:-len(INT8_SCALE)]: t for name, t in state.items() if name.endswith(INT8_SCALE)}
    return {name: (t.float().reshape(t.shape[0], -1) * scales[name][:, None]).reshape(t.shape) if name in scales
            else t for name, t in state.items() if not name.endswith(INT8_SCALE)}


def first_non_finite(named: Iterable[tuple[str, torch.Tensor]]) -> Optional[str]:
    """The name of the first floating-point tensor holding NaN or Inf; None when all are finite (one sync)."""
    named = [(name, getattr(t, "_local_tensor", t)) for name, t in named  # a DTensor: this rank's shard
             if torch.is_tensor(t) and t.is_floating_point()]
    if not named:
        return None
    device = named[0][1].device
    finite = torch.stack([torch.isfinite(t).all().to(device) for _, t in named])  # [n] bool
    if bool(finite.all()):
        return None
    return named[int((~finite).nonzero()[0])][0]


def require_finite(state: Mapping[str, torch.Tensor], where: str) -> None:
    """ValueError naming the first NaN/Inf tensor of a state dict: a diverged model is never saved or loaded."""
    bad = first_non_finite(state.items())
    if bad is not None:
        raise ValueError(f"{where}: tensor {bad!r} holds NaN or Inf (the run diverged); use an earlier checkpoint")


def _unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with tied tensors stored once (under their first name), each its own copy."""
    state, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            state[name] = tensor.detach().contiguous().clone()
    return state


def load_pretrained_state(model: nn.Module, folder: str | Path) -> None:
    """Load model.safetensors strictly: every tensor present (tied ones once), every shape equal."""
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME}")
    try:
        state = float_state(load_file(str(path)))
    except SafetensorError as e:
        raise ValueError(f"{path}: damaged or truncated safetensors file ({e}); re-export the checkpoint") from e
    require_finite(state, f"{path}: refusing to load")
    expected = model.state_dict()
    stored = {(expected[k].data_ptr(), tuple(expected[k].shape)) for k in state if k in expected}
    missing = [k for k, t in expected.items() if k not in state and (t.data_ptr(), tuple(t.shape)) not in stored]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k}: stored {list(v.shape)}, model {list(expected[k].shape)}"
                   for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        raise ValueError(f"{path}: weights do not match the config: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}, wrong shape {wrong_shape[:8]}")
    model.load_state_dict(state, strict=False)


def safe_torch_load(path: str | Path) -> dict:
    """torch.load restricted to tensors and plain containers; anything else is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path}: refused to load: the file holds Python objects beyond tensors and plain containers, "
            f"and loading it would run arbitrary code ({str(e).splitlines()[0]})"
        ) from e


# ---- Lightning .ckpt files written by an mmr1 objective (mmr1.objectives.base.ObjectiveModule) ----------------
MODEL_PREFIX = "model."  # where ObjectiveModule keeps the MultimodalModel in its state dict


def load_model(checkpoint: str | Path, config: str | Path | None = None, compressed: bool = True):
    """(model, tokenizer) from a checkpoint folder (e.g. `runs/x/export`) or a Lightning `.ckpt`.

    A `.ckpt` is read weights-only; its architecture comes from `config` (a config.json),
    else a config.json beside it, else the config the objective stored in it. A folder
    holding compression.json (see `mmr1.compress`) is quantized on load unless `compressed` is False."""
    from mmr1.datamodules.tokenizer import Tokenizer
    from mmr1.model import MultimodalModel

    path = Path(checkpoint)
    if path.is_dir():
        if config is not None:
            raise ValueError("--config: a checkpoint folder has its own config.json; give --config only with a .ckpt")
        model, tokenizer = MultimodalModel.from_pretrained(path), Tokenizer.from_pretrained(path)
        if compressed and (path / COMPRESSION_NAME).is_file():
            from mmr1.compress import apply_saved

            model = apply_saved(model, json.loads((path / COMPRESSION_NAME).read_text()))
        return model, tokenizer
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint folder or .ckpt file")
    if path.suffix != ".ckpt":
        raise ValueError(f"{path}: expected a checkpoint folder (config.json + model.safetensors) or a Lightning .ckpt")
    return read_ckpt(path, Path(config) if config is not None else None)


def read_ckpt(path: str | Path, config: str | Path | None = None):
    """(model in eval mode, tokenizer) of an objective's `.ckpt`; the config as in `load_model`."""
    from mmr1.config import Config
    from mmr1.datamodules.tokenizer import Tokenizer
    from mmr1.model import MultimodalModel

    path = Path(path)
    checkpoint = safe_torch_load(path)
    require_finite(checkpoint.get("state_dict", {}), f"{path}: refusing to load")
    config = Path(config) if config is not None else (
        path.parent / CONFIG_NAME if (path.parent / CONFIG_NAME).is_file() else None)
    if config is not None:
        model_config = Config.from_file(config)
    elif "mmr1_config" in checkpoint:
        model_config = Config.from_dict(checkpoint["mmr1_config"])
    else:
        raise ValueError(f"{path}: no config; pass --config config.json or put config.json beside the .ckpt")
    try:
        model = load_objective_weights(MultimodalModel(model_config), checkpoint)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the config ({str(e).splitlines()[0]} …)") from e
    if "mmr1_tokenizer" in checkpoint or not (path.parent / "tokenizer.json").is_file():
        tokenizer = stored_tokenizer(checkpoint.get("mmr1_tokenizer"))
    else:
        tokenizer = Tokenizer.from_pretrained(path.parent)
    return model.eval(), tokenizer


def export_ckpt(ckpt_path: str | Path, out_folder: str | Path) -> Path:
    """Turn a Lightning `.ckpt` written by an ObjectiveModule into a checkpoint folder (weights-only load);
    LoRA adapters are merged, so the folder holds plain weights."""
    from mmr1.config import Config
    from mmr1.model import MultimodalModel

    checkpoint = safe_torch_load(ckpt_path)
    if "mmr1_config" not in checkpoint:
        raise ValueError(f"{ckpt_path}: no mmr1_config; expected a checkpoint written by an mmr1 objective")
    require_finite(checkpoint.get("state_dict", {}), f"{ckpt_path}: refusing to export")
    model = load_objective_weights(MultimodalModel(Config.from_dict(checkpoint["mmr1_config"])), checkpoint)
    return model.save_pretrained(out_folder, stored_tokenizer(checkpoint.get("mmr1_tokenizer")))


def load_objective_weights(model: nn.Module, checkpoint: dict) -> nn.Module:
    """Load the model weights of an objective's `.ckpt` into `model` (a MultimodalModel); adapters trained
    with LoRA (`checkpoint["mmr1_lora"]`) are injected, loaded, then merged into plain Linear layers."""
    from mmr1.lora import adapter_settings, apply_lora, merge_lora_in_place

    state = {k[len(MODEL_PREFIX):]: v for k, v in checkpoint.get("state_dict", {}).items()
             if k.startswith(MODEL_PREFIX)}
    lora = checkpoint.get("mmr1_lora")
    if lora is not None:
        apply_lora(model, **adapter_settings(lora))
    model.load_state_dict(state)
    return merge_lora_in_place(model) if lora is not None else model


def stored_tokenizer(stored: Optional[dict]):
    """The tokenizer an objective stored in its `.ckpt` as plain data (or the default one)."""
    from mmr1.datamodules.tokenizer import Tokenizer

    return Tokenizer.default() if stored is None else Tokenizer.from_dict(stored)


def export(checkpoint: str | Path, out: str | Path, quantize: Optional[str] = None, prune: Optional[float] = None,
           config: str | Path | None = None):
    """Write a checkpoint folder from a folder or a `.ckpt`: with `prune`, that fraction of the Linear weights
    zeroed by magnitude; with quantize="int8", the weights stored as int8 (`int8_state`, about a quarter of
    fp32 on disk) and compression.json telling `load_model` to run the Linear layers in int8.
    Returns (folder, mmr1.compress.Report of the model as it loads)."""
    from mmr1.compress import QUANTIZE_MODES, Report, prune_magnitude, quantize_int8, size_mb, sparsity

    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"--quantize: expected one of {QUANTIZE_MODES}, got {quantize!r}")
    model, tokenizer = load_model(checkpoint, config, compressed=False)
    report = Report(size_mb(model), sparsity(model))
    if prune:
        model, report = prune_magnitude(model, prune)
    folder = model.save_pretrained(out, tokenizer, int8=quantize is not None)
    marker = Path(folder) / COMPRESSION_NAME
    if quantize is not None:
        marker.write_text(json.dumps({"quantize": quantize, "sparsity": round(report.sparsity, 6)}) + "\n")
        report = Report(quantize_int8(model)[1].size_mb, report.sparsity)
    elif marker.exists():
        marker.unlink()
    return folder, report
