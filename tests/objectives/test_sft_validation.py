"""SFT validation that answers its prompts (val_max_new_tokens): the accuracy GRPO's validation reports."""

import lightning as L
import pytest
import torch

from mmr1.datamodules import RLPromptDataModule, SFTDataModule
from mmr1.objectives import GRPOModule, SFTModule

DATA = dict(batch_size=4, synth_train_size=8, synth_val_size=6, seed=3)


def validate(module, data) -> dict:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return trainer.validate(module, data, verbose=False)[0]


def test_sft_validation_answers_as_grpo_validation_does(tiny_checkpoint):
    sft = validate(SFTModule(init_from=str(tiny_checkpoint), val_max_new_tokens=6), SFTDataModule(**DATA))
    grpo = validate(GRPOModule(init_from=str(tiny_checkpoint), max_new_tokens=6), RLPromptDataModule(**DATA))
    assert {"val/loss", "val/accuracy", "val/format_rate"} <= set(sft)
    assert sft["val/accuracy"] == grpo["val/accuracy"] and sft["val/format_rate"] == grpo["val/format_rate"]
    assert "val/accuracy" not in validate(SFTModule(init_from=str(tiny_checkpoint)), SFTDataModule(**DATA))


def test_sft_validation_scores_right_answers_as_right(tiny_checkpoint, monkeypatch):
    """Greedy answers that are each record's own response score 1; the references come from the batch."""
    from mmr1.datamodules.prompt import format_response

    seen = []

    def answer(model, tokenizer, ids, mask, batch, max_new_tokens):
        seen.append((ids.shape[0], max_new_tokens, bool(mask[:, -1].all())))
        return [format_response("I see.", a, "") for a in batch["answers"]]

    monkeypatch.setattr("mmr1.objectives.sft.greedy_completions", answer)
    metrics = validate(SFTModule(init_from=str(tiny_checkpoint), val_max_new_tokens=5), SFTDataModule(**DATA))
    assert metrics["val/accuracy"] == 1.0 and metrics["val/format_rate"] == 1.0
    assert seen == [(4, 5, True), (2, 5, True)]  # left-padded prompts, every val record


def test_val_max_new_tokens_is_checked():
    with pytest.raises(ValueError, match="val_max_new_tokens: expected >= 0"):
        SFTModule(val_max_new_tokens=-1)


def test_sft_validation_without_answers_is_a_named_error(tiny_checkpoint):
    from mmr1.datamodules.tokenizer import Tokenizer

    data = SFTDataModule(**DATA)
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    del batch["answers"]
    module = SFTModule(init_from=str(tiny_checkpoint), val_max_new_tokens=4)
    module.tokenizer = Tokenizer.default()
    with pytest.raises(ValueError, match="val_max_new_tokens: the val records need an `answer`"):
        module.validation_step(batch, 0)
