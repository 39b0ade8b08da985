"""Frozen models an objective consults (reference, teacher, reward model), kept out of training."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch import nn

from mmr1.config import Config
from mmr1.datamodules.tokenizer import Tokenizer


def frozen(model: nn.Module) -> nn.Module:
    """The model in eval mode, with no gradient to any of its parameters."""
    return model.eval().requires_grad_(False)


class FrozenModels:
    """Mixin for an ObjectiveModule that consults frozen models (reference, teacher, reward model) held in
    `self._frozen: dict[str, nn.Module]`: a plain dict, so they stay out of the parameters, the state dict
    and the optimizer; they follow the module to its device when a run starts."""

    _frozen: dict[str, nn.Module]

    def _move_frozen(self) -> None:
        for model in self._frozen.values():
            model.to(self.device)

    def on_fit_start(self) -> None:
        self._move_frozen()

    def on_validation_start(self) -> None:
        self._move_frozen()

    def on_test_start(self) -> None:
        self._move_frozen()


def check_vocabulary(folder: str | Path, config: Config, student: Config, tokenizer: Optional[Tokenizer],
                     what: str) -> None:
    """ValueError unless the model saved in `folder` (config `config`) shares the student's vocabulary:
    the same core vocab_size and, when both are known, the same tokenizer."""
    if config.core.vocab_size != student.core.vocab_size:
        raise ValueError(f"{what}: {folder} has core.vocab_size={config.core.vocab_size}, the student "
                         f"{student.core.vocab_size}; both must share one vocabulary")
    if tokenizer is not None and (Path(folder) / "tokenizer.json").is_file():
        if Tokenizer.from_pretrained(folder).backend.get_vocab() != tokenizer.backend.get_vocab():
            raise ValueError(f"{what}: the tokenizer in {folder} differs from the training data's; both must "
                             "share one vocabulary")
