"""Frozen models an objective consults (reference, teacher, reward model), kept out of training."""

from __future__ import annotations

from torch import nn


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
