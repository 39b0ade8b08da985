"""Causal-LM pretraining of the core on real GSM8K text: loss falls, perplexity is logged."""

import lightning as L
import pytest

from mmr1.datamodules.text import TextDataModule
from mmr1.objectives import CLMModule


def test_clm_pretraining_on_gsm8k_learns(shared_data, tmp_path):
    L.seed_everything(0, verbose=False)
    module = CLMModule(preset="tiny", overrides={"vision": None, "audio": None, "text": None,
                                                 "core": {"n_layers": 2, "n_refine_iters": 0}}, lr=3e-3,
                       warmup_steps=5)
    data = TextDataModule([str(shared_data / "gsm8k" / "test.jsonl")], [str(shared_data / "gsm8k" / "test.jsonl")],
                          vocab_size=512, block_size=96, batch_size=8, config=module.config)
    trainer = L.Trainer(accelerator="cpu", max_steps=30, logger=False, enable_checkpointing=False,
                        limit_val_batches=3, val_check_interval=30, enable_progress_bar=False,
                        enable_model_summary=False)
    before = trainer.validate(module, data, verbose=False)[0]["val/perplexity"]
    trainer.fit(module, data)
    after = trainer.callback_metrics["val/perplexity"]
    assert float(after) < 0.5 * before, (before, float(after))
    assert 0 <= float(trainer.callback_metrics["train/padding_fraction"]) < 0.05
    assert module.tokenizer is data.tokenizer  # exported with the weights


def test_blocks_longer_than_the_core_are_refused():
    module = CLMModule(preset="tiny", overrides={"vision": None, "audio": None, "text": None})
    with pytest.raises(ValueError, match="block_size: 1024 is longer than core.max_seq_len=512"):
        TextDataModule(["x.txt"], block_size=1024, config=module.config)
