"""Checkpoint folders (config.json + model.safetensors + tokenizer files) and safe loading.

Nothing here unpickles arbitrary objects: weights are safetensors, and a `.ckpt`/`.pt`
is read with `torch.load(weights_only=True)`, which refuses anything but tensors and
plain containers.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def save_pretrained(model: nn.Module, config: dict, folder: str | Path, tokenizer=None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    save_model(model, str(folder / WEIGHTS_NAME))  # handles tied weights
    if tokenizer is not None:
        tokenizer.save(folder)
    return folder


def read_config(folder: str | Path, architecture: str) -> dict:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {CONFIG_NAME}; expected a folder written by save_pretrained")
    data = json.loads(path.read_text())
    if data.get("architecture") != architecture:
        raise ValueError(f"{path}: architecture is {data.get('architecture')!r}, expected {architecture!r}")
    return data


def load_pretrained_state(model: nn.Module, folder: str | Path) -> None:
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME}")
    missing, unexpected = load_model(model, str(path), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the config: missing {sorted(missing)[:8]}, "
                         f"unexpected {sorted(unexpected)[:8]}")


def safe_torch_load(path: str | Path) -> dict:
    """torch.load restricted to tensors and plain containers; anything else is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path}: refused to load: the file holds Python objects beyond tensors and plain containers, "
            f"and loading it would run arbitrary code ({str(e).splitlines()[0]})"
        ) from e
