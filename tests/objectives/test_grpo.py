"""GRPO trains through a real Trainer on the built-in data, with B > 1 prompts, and memory stays flat;
a learned reward model's score is added to the rule rewards."""

import resource

import lightning as L
import pytest
import torch

from mmr1.config import Config
from mmr1.datamodules.datamodules import RLPromptDataModule
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.model import MultimodalModel, media_inputs
from mmr1.objectives.grpo import GRPOModule
from mmr1.objectives.reward_model import score_rollout
from mmr1.objectives.reward_model import RewardModel
from mmr1.rl.rollout import Rollout, completion_logprobs, micro_batches, sample_groups, select_groups


SHALLOW = {"core": {"n_layers": 1, "n_refine_iters": 0}, "vision": {"depth": 1}, "audio": {"depth": 1},
           "text": {"depth": 1}}  # the wiring under test does not depend on depth


def trainer(steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_grpo_steps_update_the_policy_and_log_every_term():
    torch.manual_seed(0)
    module = GRPOModule(group_size=3, micro_batch_size=3, max_new_tokens=8, ppo_epochs=2, overrides=SHALLOW,
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


@pytest.fixture(scope="module")
def reward_folder(tmp_path_factory):
    torch.manual_seed(0)
    scorer = RewardModel(MultimodalModel(Config.from_name("tiny", core={"n_layers": 1})))
    return scorer.save_pretrained(tmp_path_factory.mktemp("rm"), Tokenizer.default())


def test_score_rollout_scores_each_response_after_its_own_prompt(reward_folder):
    torch.manual_seed(0)
    scorer = RewardModel.from_pretrained(reward_folder)
    data = RLPromptDataModule(config=scorer.model.config, batch_size=2, synth_train_size=2, augment=False)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    rollout = sample_groups(scorer.model, batch, 2, 4)
    scores = score_rollout(scorer, batch, rollout)  # [4]
    for row in range(4):
        prompt = row // 2
        ids = torch.cat((batch["input_ids"][prompt][batch["attention_mask"][prompt]],
                         rollout.completion_ids[row][rollout.completion_mask[row]]))[None]
        media = {k: batch[k][prompt:prompt + 1] for k in ("pixel_values", "image_mask", "audio_values",
                                                           "audio_lengths", "text_ids", "text_mask")}
        with torch.no_grad():
            alone = scorer(ids, torch.ones_like(ids, dtype=torch.bool), **media)
        torch.testing.assert_close(scores[row:row + 1], alone, atol=1e-4, rtol=1e-4)


def test_reward_model_score_is_added_to_the_rule_rewards(reward_folder):
    torch.manual_seed(0)
    module = GRPOModule(group_size=2, micro_batch_size=4, max_new_tokens=6, beta=0.0, rewards={"format": 0.0},
                        reward_model=str(reward_folder), reward_model_weight=2.0,
                        overrides={"core": {"n_layers": 1}})
    data = RLPromptDataModule(config=module.config, batch_size=2, synth_train_size=4, synth_val_size=2)
    t = trainer(1, limit_val_batches=0)
    t.fit(module, data)
    logged = t.callback_metrics
    assert torch.isfinite(logged["train/reward_model"]) and logged["train/reward_model"] != 0
    torch.testing.assert_close(logged["train/reward"], 2.0 * logged["train/reward_model"])  # rule terms weigh 0
    assert not any("reward_model" in k for k in module.state_dict())


def test_reward_model_with_another_vocabulary_is_refused(reward_folder):
    with pytest.raises(ValueError, match="reward_model: .* core.vocab_size=512"):
        GRPOModule(reward_model=str(reward_folder), overrides={"core": {"vocab_size": 600}})


def test_knobs_are_checked():
    with pytest.raises(ValueError, match="micro_batch_size: must be a multiple of group_size=4"):
        GRPOModule(group_size=4, micro_batch_size=6)
    with pytest.raises(ValueError, match="group_size"):
        GRPOModule(group_size=1)


@pytest.mark.slow
def test_memory_stays_flat_over_50_steps():
    torch.manual_seed(0)
    module = GRPOModule(group_size=2, micro_batch_size=4, max_new_tokens=4, overrides=SHALLOW)
    data = RLPromptDataModule(config=module.config, batch_size=2, synth_train_size=200, synth_val_size=2)
    peaks = []

    class Probe(L.Callback):
        def on_train_batch_end(self, *args):
            peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # MiB

    trainer(50, limit_val_batches=0, callbacks=[Probe()]).fit(module, data)
    assert len(peaks) == 50
    growth = peaks[-1] - peaks[9]
    assert growth < 30, f"peak RSS grew {growth:.0f} MiB between step 10 and step 50"


def test_first_ratio_is_one_and_kl_to_an_unchanged_reference_is_zero_on_audio_prompts(noisy):
    torch.manual_seed(0)
    module = GRPOModule(group_size=2, micro_batch_size=2, ppo_epochs=2, max_new_tokens=6, temperature=0.7,
                        overrides=noisy)
    data = RLPromptDataModule(config=module.config, batch_size=2, synth_train_size=2, augment=False)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert (batch["audio_lengths"] > 0).all()
    module.train()  # as Lightning leaves it, then the RL step makes the policy deterministic
    module.on_train_batch_start(batch, 0)
    rollout = sample_groups(module.model, batch, 2, 6, temperature=0.7)
    ref, old = module.fixed_logprobs(batch, rollout)
    moe = module.model.core.moe_layers()[0]
    moe.expert_load.zero_()
    for rows in micro_batches(4, 2):
        out = module.micro_batch_loss(batch, rollout, torch.tensor([1.0, -1.0, 0.5, -0.5]), ref, old, rows)
        assert out.ratio.item() == 1.0 and out.kl.item() == 0.0 and out.clip_fraction.item() == 0.0
        out.loss.backward()
    assert module.model.audio.subsample.conv[0].weight.grad.abs().sum() > 0  # gradients still reach the audio
    assert moe.expert_load.sum() > 0  # the MoE still counts the trained tokens' load for bias balancing

    module.train()  # in training mode dropout and SpecAugment make two passes differ: what the above excludes
    with torch.no_grad():
        assert not torch.equal(completion_logprobs(module.model, batch, rollout),
                               completion_logprobs(module.model, batch, rollout))


def test_log_probs_are_taken_at_the_sampling_temperature_and_nucleus_sampling_is_refused():
    torch.manual_seed(0)
    module = GRPOModule(group_size=2, micro_batch_size=2, overrides=SHALLOW)
    model = module.model.eval()
    data = RLPromptDataModule(config=module.config, batch_size=2, synth_train_size=2, augment=False)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    rollout = sample_groups(model, batch, 2, 3, temperature=0.5)
    with torch.no_grad():
        prefix = model.prefix(**media_inputs(batch))
        first = model.core(batch["input_ids"], batch["attention_mask"], prefix.embeds, prefix.mask,
                           logits_to_keep=1).logits[:, -1].repeat_interleave(2, dim=0)  # [B*G, V], what sampled token 0
        expected = torch.log_softmax(first.float() / 0.5, dim=-1).gather(1, rollout.completion_ids[:, :1])[:, 0]
        torch.testing.assert_close(completion_logprobs(model, batch, rollout)[:, 0], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="top_p: RL log-probs are taken on the full temperature-scaled"):
        completion_logprobs(model, batch, sample_groups(model, batch, 2, 3, top_p=0.9))
    with pytest.raises(ValueError, match="top_p: .* expected 1.0, got 0.9"):
        GRPOModule(top_p=0.9)


def test_loss_types_and_dr_grpo_advantages():
    with pytest.raises(ValueError, match="loss_type: expected one of"):
        GRPOModule(loss_type="bnpo")
    rewards = torch.tensor([1.0, 0.0])
    torch.testing.assert_close(GRPOModule(group_size=2, micro_batch_size=2, loss_type="dr_grpo").advantages(rewards)[0],
                               torch.tensor([0.5, -0.5]))  # r - mean, not divided by the std
    torch.testing.assert_close(GRPOModule(group_size=2, micro_batch_size=2).advantages(rewards)[0],
                               torch.tensor([1.0, -1.0]), atol=1e-3, rtol=0)  # / (population std 0.5 + 1e-4)


def test_select_groups_keeps_the_prompts_and_their_responses():
    batch = {"input_ids": torch.arange(6).view(3, 2), "answers": ["a", "b", "c"], "ids": ["x", "y", "z"]}
    rollout = Rollout(batch["input_ids"], torch.ones(3, 2, dtype=torch.bool), torch.arange(6)[:, None],
                      torch.ones(6, 1, dtype=torch.bool), group_size=2)
    picked, cut = select_groups(batch, rollout, torch.tensor([2, 0]))
    assert picked["answers"] == ["c", "a"] and picked["input_ids"].tolist() == [[4, 5], [0, 1]]
    assert cut.completion_ids[:, 0].tolist() == [4, 5, 0, 1] and cut.prompt_ids.tolist() == [[4, 5], [0, 1]]
    with pytest.raises(ValueError, match=r"batch\['pixel_values'\]: expected one row per prompt \(3\)"):
        select_groups({**batch, "pixel_values": torch.zeros(2, 1)}, rollout, torch.tensor([0]))


def fixed_rewards(module: GRPOModule, totals: list[float]) -> None:
    """Every rollout of `module` gets these rule rewards, whatever it samples."""
    module.rewards = lambda completions, records: (totals, {})


def test_filter_groups_updates_on_the_groups_whose_rewards_differ():
    torch.manual_seed(0)
    module = GRPOModule(group_size=2, micro_batch_size=2, max_new_tokens=4, filter_groups=True, overrides=SHALLOW)
    fixed_rewards(module, [1.0, 1.0, 1.0, 0.0])  # prompt 0: no spread; prompt 1: one right, one wrong
    data = RLPromptDataModule(config=module.config, batch_size=2, synth_train_size=8, synth_val_size=2,
                              augment=False)
    seen = []
    loss = module.micro_batch_loss

    def spy(batch, rollout, advantages, ref, old, rows):
        seen.append((batch["answers"], rollout.completion_ids.shape[0], advantages.tolist(), rows))
        return loss(batch, rollout, advantages, ref, old, rows)

    module.micro_batch_loss = spy
    t = trainer(1, limit_val_batches=0)
    t.fit(module, data)
    assert t.global_step == 1
    answers, rows, advantages, _ = seen[0]
    assert len(seen) == 1 and rows == 2 and len(answers) == 1  # one group of two responses, not two groups
    torch.testing.assert_close(torch.tensor(advantages), torch.tensor([1.0, -1.0]), atol=1e-3, rtol=0)
    assert t.callback_metrics["train/trained_groups"] == 1 and t.callback_metrics["train/zero_spread_groups"] == 0.5


def test_filter_groups_skips_rollouts_with_nothing_to_learn_and_gives_up_after_too_many(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr("mmr1.objectives.grpo.MAX_FLAT_ROLLOUTS", 3)
    module = GRPOModule(group_size=2, micro_batch_size=2, max_new_tokens=4, filter_groups=True, overrides=SHALLOW)
    fixed_rewards(module, [1.0, 1.0, 0.0, 0.0])  # every group's rewards are equal
    data = RLPromptDataModule(config=module.config, batch_size=2, synth_train_size=8, synth_val_size=2)
    before = {k: v.clone() for k, v in module.model.named_parameters()}
    t = trainer(2, limit_val_batches=0)
    with pytest.raises(RuntimeError, match="filter_groups: 3 rollouts in a row had no group whose rewards differ"):
        t.fit(module, data)
    assert t.global_step == 0
    assert all(torch.equal(before[k], v) for k, v in module.model.named_parameters())
