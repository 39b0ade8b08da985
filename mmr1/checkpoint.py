"""Checkpoint folders (config.json + model.safetensors + tokenizer files) and safe loading.

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


def save_pretrained(model: nn.Module, config: dict, folder: str | Path, tokenizer=None) -> Path:
    folder = Path(folder)
    state = _unique_state(model)
    require_finite(state, f"{folder}: refusing to save")
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
        state = load_file(str(path))
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
