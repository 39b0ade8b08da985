"""GRPO trains through a real Trainer on the built-in data, with B > 1 prompts, and memory stays flat."""

import resource

import lightning as L
import pytest
import torch

from mmr1.datamodules.datamodules import RLPromptDataModule
from mmr1.objectives.grpo import GRPOModule


def trainer(steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_grpo_steps_update_the_policy_and_log_every_term():
    torch.manual_seed(0)
    module = GRPOModule(group_size=3, micro_batch_size=3, max_new_tokens=8, ppo_epochs=2,
                        rewards={"accuracy": 1.0, "format": 0.5, "language": 0.1})
    data = RLPromptDataModule(config=module.config, batch_size=2, synth_train_size=8, synth_val_size=2)
    before = {k: v.clone() for k, v in module.model.named_parameters()}
    reference = {k: v.clone() for k, v in module.reference.named_parameters()}
    t = trainer(4, limit_val_batches=1)
    t.fit(module, data)
    assert t.global_step == 4  # 2 rollouts x 2 ppo epochs
    assert any(not torch.equal(before[k], v) for k, v in module.model.named_parameters())
    assert all(torch.equal(reference[k], v) for k, v in module.reference.named_parameters())
    logged = set(t.callback_metrics)
    for name in ("reward", "accuracy", "kl", "clip_fraction", "response_length", "zero_spread_groups",
                 "reward_accuracy", "reward_format", "reward_language"):
        assert f"train/{name}" in logged, name
    validated = t.validate(module, data, verbose=False)[0]
    assert {"val/accuracy", "val/format_rate", "val/reward"} <= set(validated)
    assert not any("reference" in k or "_frozen" in k for k in module.state_dict())


def test_knobs_are_checked():
    with pytest.raises(ValueError, match="micro_batch_size: must be a multiple of group_size=4"):
        GRPOModule(group_size=4, micro_batch_size=6)
    with pytest.raises(ValueError, match="group_size"):
        GRPOModule(group_size=1)


@pytest.mark.slow
def test_memory_stays_flat_over_50_steps():
    torch.manual_seed(0)
    module = GRPOModule(group_size=2, micro_batch_size=4, max_new_tokens=6)
    data = RLPromptDataModule(config=module.config, batch_size=2, synth_train_size=200, synth_val_size=2)
    peaks = []

    class Probe(L.Callback):
        def on_train_batch_end(self, *args):
            peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # MiB

    trainer(50, limit_val_batches=0, callbacks=[Probe()]).fit(module, data)
    assert len(peaks) == 50
    growth = peaks[-1] - peaks[9]
    assert growth < 30, f"peak RSS grew {growth:.0f} MiB between step 10 and step 50"
