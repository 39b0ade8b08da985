"""GSM8K end to end (issue 7): real records → manifest → SFT → GRPO through a Trainer, and the accuracy
reward reads GSM8K answers the way they are written."""

import math

import lightning as L
import pytest
import torch

from mmr1.datamodules.datamodules import RLPromptDataModule, SFTDataModule
from mmr1.datamodules.gsm8k import convert, read_gsm8k
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.objectives.grpo import GRPOModule
from mmr1.objectives.sft import SFTModule
from mmr1.rl.rewards import accuracy_reward

# text-only, one core layer; GSM8K questions run to ~320 tokens and prompt + response to ~750
OVERRIDES = {"vision": None, "audio": None, "text": {"max_positions": 512, "depth": 1},
             "core": {"n_layers": 1, "max_seq_len": 1024}}


class LossLog(L.Callback):
    """Every step's logged training metrics."""

    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, *args):
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def fit(module, data, steps: int) -> list[dict]:
    log = LossLog()
    L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, callbacks=[log]).fit(module, data)
    return log.steps


def test_sft_then_grpo_on_real_gsm8k(shared_data, tmp_path):
    source = tmp_path / "train.jsonl"
    source.write_text("".join((shared_data / "gsm8k" / "train.jsonl").open().readlines()[:32]))
    manifest = tmp_path / "gsm8k.jsonl"
    assert convert(source, manifest) == 32
    torch.manual_seed(0)
    sft = SFTModule(overrides=OVERRIDES, warmup_steps=1)
    data = SFTDataModule(train_manifest=str(manifest), config=sft.config, batch_size=2,
                         max_length=sft.config.core.max_seq_len)
    steps = fit(sft, data, 2)
    assert len(steps) == 2 and all(math.isfinite(s["train/loss"]) for s in steps)
    folder = sft.model.save_pretrained(tmp_path / "sft", Tokenizer.default())

    grpo = GRPOModule(init_from=str(folder), group_size=2, micro_batch_size=4, max_new_tokens=6, warmup_steps=1)
    data = RLPromptDataModule(train_manifest=str(manifest), config=grpo.config, batch_size=2,
                              max_length=grpo.config.core.max_seq_len)
    steps = fit(grpo, data, 2)
    assert len(steps) == 2
    for step in steps:
        for name in ("train/reward", "train/policy_loss", "train/kl", "train/reward_accuracy"):
            assert math.isfinite(step[name]), name


def answer(text: str) -> str:
    return f"<think>x</think><answer>{text}</answer>"


def test_every_gsm8k_test_answer_pays_against_itself(shared_data):
    references = [record["answer"] for record in read_gsm8k(shared_data / "gsm8k" / "test.jsonl")]
    assert len(references) == 1319 and any("," in r for r in references) and any(r.startswith("-") for r in references)
    assert [r for r in references if accuracy_reward(answer(r), r) != 1.0] == []


@pytest.mark.parametrize("predicted, reference", [
    ("1,000", "1000"), ("$1,000", "1000"), ("1000.0", "1000"), ("1000", "1,000"), (" 1000 ", "1000"),
    ("-3", "-3"), ("-1,250", "-1250"), ("0.5", ".5"), ("2.50", "2.5"), ("3/4", "0.75"), ("18.", "18"),
    ("$1,000.50", "1000.5"),
])
def test_number_forms_of_the_right_answer_pay(predicted, reference):
    assert accuracy_reward(answer(predicted), reference) == 1.0


@pytest.mark.parametrize("predicted, reference", [
    ("1001", "1000"), ("-1000", "1000"), ("100", "1,000"), ("10.00", "1000"), ("1000 or 1001", "1000"), ("", "3"),
    ("$10.00", "1000"),
    ("-$5", "5"),
])
def test_a_wrong_number_pays_nothing(predicted, reference):
    assert accuracy_reward(answer(predicted), reference) == 0.0
