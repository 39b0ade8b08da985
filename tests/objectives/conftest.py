"""Fixtures shared by the objectives' tests."""

import pytest


@pytest.fixture
def noisy() -> dict:
    """Overrides for a shallow tiny model whose training mode is random (dropout in the audio encoder and the
    fusion, SpecAugment on) with a MoE core, for the RL tests that need the policy to be deterministic."""
    return {"core": {"n_layers": 1, "n_refine_iters": 0, "n_routed_experts": 4},
            "audio": {"depth": 1, "dropout": 0.3, "freq_mask": 8, "time_mask": 20},
            "fusion": {"dropout": 0.3}, "vision": {"depth": 1}, "text": {"depth": 1}}
