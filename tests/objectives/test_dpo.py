"""DPO widens the chosen-vs-rejected margin on a fixed batch; the post-training configs build."""

import math
import sys
from pathlib import Path

import pytest
import torch

from mmr1.datamodules.datamodules import PreferenceDataModule
from mmr1.objectives import DistillModule, DPOModule, PPOModule, RewardModelModule
from mmr1.objectives.dpo import response_logprobs
from mmr1.cli.train import TrainingCLI

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def preference_batch(module, n: int = 2) -> dict:
    data = PreferenceDataModule(config=module.config, batch_size=n, synth_train_size=n, augment=False)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def test_response_logprobs_sum_only_the_response_tokens_shifted():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 6, 0]])
    logp = logits.log_softmax(-1)
    expected = torch.stack([logp[0, 1, 3] + logp[0, 2, 4],
                            logp[1, 0, 1] + logp[1, 1, 2] + logp[1, 2, 6] + logp[1, 3, 0]])
    torch.testing.assert_close(response_logprobs(logits, labels), expected)


def test_dpo_steps_widen_the_margin_on_a_fixed_batch():
    torch.manual_seed(0)
    module = DPOModule(beta=0.1)
    batch = preference_batch(module)
    module.eval()
    start = module.losses(batch)
    assert start["reward_margin"].item() == pytest.approx(0, abs=1e-5)  # the policy starts as the reference
    assert start["loss"].item() == pytest.approx(math.log(2), abs=1e-6)
    reference = {k: v.clone() for k, v in module.reference.named_parameters()}
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    module.train()
    for _ in range(3):
        optimizer.zero_grad()
        module.losses(batch)["loss"].backward()
        optimizer.step()
    end = module.eval().losses(batch)
    assert end["reward_margin"] > 0.2
    assert end["preference_accuracy"] == 1
    assert end["loss"] < start["loss"]
    assert all(torch.equal(reference[k], v) for k, v in module.reference.named_parameters())
    assert not any(k.startswith(("_frozen", "reference")) for k in module.state_dict())


def test_beta_is_checked():
    with pytest.raises(ValueError, match="beta"):
        DPOModule(beta=0)


@pytest.mark.parametrize("name, module_cls, data_cls", [
    ("tiny_dpo.yaml", DPOModule, "PreferenceDataModule"),
    ("tiny_reward.yaml", RewardModelModule, "PreferenceDataModule"),
    ("tiny_ppo.yaml", PPOModule, "RLPromptDataModule"),
    ("tiny_distill.yaml", DistillModule, "SFTDataModule"),
])
def test_post_training_config_builds(name, module_cls, data_cls, tmp_path, monkeypatch):
    config = CONFIGS / name
    assert config.read_text().startswith(f"# mmr1 fit --config configs/{name}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["mmr1"])
    cli = TrainingCLI(["--config", str(config)], run=False)
    assert type(cli.model) is module_cls
    assert type(cli.datamodule).__name__ == data_cls
    assert cli.datamodule.config is cli.model.config


def test_unchanged_policy_has_zero_implicit_reward_in_its_training_step_on_audio_prompts(noisy):
    torch.manual_seed(0)
    module = DPOModule(beta=0.1, overrides=noisy)
    batch = preference_batch(module)
    assert (batch["audio_lengths"] > 0).all()
    module.train()  # as Lightning leaves it, then the DPO step makes the policy deterministic
    module.on_train_batch_start(batch, 0)
    terms = module.losses(batch)
    assert terms["reward_margin"].item() == 0.0 and terms["chosen_reward"].item() == 0.0
    assert terms["loss"].item() == pytest.approx(math.log(2))
    terms["loss"].backward()
    assert module.model.audio.subsample.conv[0].weight.grad.abs().sum() > 0  # gradients still reach the audio
    module.train()  # in training mode dropout and SpecAugment bias the margin: what the above excludes
    assert module.losses(batch)["reward_margin"].item() != 0
