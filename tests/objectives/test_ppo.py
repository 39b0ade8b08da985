"""Reward model (Bradley–Terry, save/load) and PPO: value head, GAE over the real tokens, Trainer steps."""

import lightning as L
import pytest
import torch

from mmr1.config import Config
from mmr1.datamodules.datamodules import PreferenceDataModule, RLPromptDataModule
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.model import MultimodalModel
from mmr1.objectives import PPOModule, RewardModel, RewardModelModule
from mmr1.objectives.reward_model import last_token_states
from mmr1.losses.ppo import ppo_loss
from mmr1.rl.rollout import Rollout, micro_batches


def trainer(steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


def prompt_batch(module, n: int = 2) -> dict:
    data = RLPromptDataModule(config=module.config, batch_size=n, synth_train_size=n, augment=False)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


@pytest.fixture(scope="module")
def reward_folder(tmp_path_factory):
    torch.manual_seed(0)
    return RewardModel(MultimodalModel(Config.from_name("tiny"))).save_pretrained(
        tmp_path_factory.mktemp("rm"), Tokenizer.default())


def test_last_token_states_with_left_and_right_padding():
    hidden = torch.arange(2 * 4, dtype=torch.float).view(2, 4, 1)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)  # right-, then left-padded
    assert last_token_states(hidden, mask)[:, 0].tolist() == [2.0, 7.0]


def test_reward_model_learns_a_pair_and_round_trips_through_a_folder(tmp_path):
    torch.manual_seed(0)
    module = RewardModelModule()
    data = PreferenceDataModule(config=module.config, batch_size=2, synth_train_size=2, augment=False)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    start = module.eval().losses(batch)["loss"]
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        module.train().losses(batch)["loss"].backward()
        optimizer.step()
    end = module.eval().losses(batch)
    assert end["loss"] < start and end["accuracy"] == 1
    folder = module.reward_model.save_pretrained(tmp_path / "rm", Tokenizer.default())
    assert (folder / "reward_head.safetensors").is_file()
    loaded = RewardModel.from_pretrained(folder)
    media = {k: batch[k] for k in ("pixel_values", "image_mask", "audio_values", "audio_lengths", "text_ids",
                                   "text_mask")}
    with torch.no_grad():
        scores = module.reward_model(batch["chosen_input_ids"], batch["chosen_attention_mask"], **media)
        torch.testing.assert_close(loaded(batch["chosen_input_ids"], batch["chosen_attention_mask"], **media), scores)


def test_reward_model_folder_needs_its_head(tmp_path):
    MultimodalModel(Config.from_name("tiny")).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="reward_head.safetensors"):
        RewardModel.from_pretrained(tmp_path)


def test_advantages_are_gae_over_the_real_tokens(monkeypatch):
    torch.manual_seed(0)
    module = PPOModule(kl_coef=0.0, gamma=1.0, lam=1.0)
    batch = prompt_batch(module)
    completion = torch.randint(20, 500, (2, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    rollout = Rollout(batch["input_ids"], batch["attention_mask"], completion, mask, 1)
    score = torch.tensor([1.0, -2.0])
    monkeypatch.setattr(module, "score", lambda batch, rollout: (score, {}))
    exp = module.eval().experience(batch, rollout)
    # γ = λ = 1 and no KL: the return of every real token is the sequence's score, the advantage score - V(s_t)
    torch.testing.assert_close(exp.returns, score[:, None] * mask)
    torch.testing.assert_close(exp.advantages, (score[:, None] - exp.values) * mask)
    assert exp.rewards.tolist()[0] == [0, 0, 1.0, 0, 0] and exp.rewards[1, -1] == -2.0


def test_value_head_and_policy_get_gradient():
    torch.manual_seed(0)
    module = PPOModule(max_new_tokens=4)
    module.tokenizer = Tokenizer.default()
    batch = prompt_batch(module)
    rollout = module.sample(batch)
    exp = module.experience(batch, rollout)
    logprobs, values, entropy = module.evaluate(batch, rollout, slice(0, 2))
    out = ppo_loss(logprobs, exp.logprobs, exp.advantages, values, exp.values, exp.returns, exp.mask, entropy)
    out.loss.backward()
    for part in (module.value_head.weight, module.model.core.layers[0].self_attn.q_proj.weight):
        assert part.grad is not None and torch.isfinite(part.grad).all() and part.grad.abs().sum() > 0


@pytest.mark.parametrize("scorer", ["rules", "reward_model"])
def test_ppo_steps_through_a_trainer(scorer, reward_folder):
    torch.manual_seed(0)
    options = {"reward_model": str(reward_folder)} if scorer == "reward_model" else {}
    module = PPOModule(micro_batch_size=2, ppo_epochs=2, max_new_tokens=4, **options)
    data = RLPromptDataModule(config=module.config, batch_size=2, synth_train_size=4, synth_val_size=2)
    value_head = module.value_head.weight.detach().clone()
    reference = {k: v.clone() for k, v in module.reference.named_parameters()}
    t = trainer(2, limit_val_batches=1, val_check_interval=1, num_sanity_val_steps=0)
    t.fit(module, data)
    assert t.global_step == 2  # one rollout, two PPO epochs
    metrics = t.callback_metrics
    for name in ("reward", "kl", "loss", "policy_loss", "value_loss", "entropy", "clip_fraction", "response_length"):
        assert torch.isfinite(metrics[f"train/{name}"]), name
    assert "val/reward" in metrics
    assert not torch.equal(value_head, module.value_head.weight)
    assert all(torch.equal(reference[k], v) for k, v in module.reference.named_parameters())
    assert not any(k.startswith(("_frozen", "reference", "reward_model")) for k in module.state_dict())


def test_reward_model_and_rules_are_exclusive(reward_folder):
    with pytest.raises(ValueError, match="either"):
        PPOModule(reward_model=str(reward_folder), rewards={"accuracy": 1.0})


def test_first_ratio_is_one_and_kl_to_an_unchanged_reference_is_zero_on_audio_prompts(noisy):
    torch.manual_seed(0)
    module = PPOModule(micro_batch_size=1, max_new_tokens=5, temperature=0.7, overrides=noisy)
    module.tokenizer = Tokenizer.default()
    batch = prompt_batch(module)
    assert (batch["audio_lengths"] > 0).all()
    module.train()  # as Lightning leaves it, then the RL step makes the policy deterministic
    module.on_train_batch_start(batch, 0)
    rollout = module.sample(batch)
    exp = module.experience(batch, rollout)
    assert torch.equal(exp.logprobs, exp.ref_logprobs)  # KL 0: the per-token rewards carry no penalty
    for rows in micro_batches(2, 1):
        logprobs, values, _ = module.evaluate(batch, rollout, rows)  # with grad, as the update takes them
        assert torch.equal(logprobs, exp.logprobs[rows]) and torch.equal(values, exp.values[rows])  # ratio 1
    module.train()  # in training mode dropout and SpecAugment make two passes differ: what the above excludes
    with torch.no_grad():
        assert not torch.equal(module.evaluate(batch, rollout, slice(0, 2))[0],
                               module.evaluate(batch, rollout, slice(0, 2))[0])


def test_nucleus_sampling_is_refused():
    with pytest.raises(ValueError, match="top_p: .* expected 1.0, got 0.5"):
        PPOModule(top_p=0.5)
