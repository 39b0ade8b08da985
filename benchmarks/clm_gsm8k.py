"""Learning figure: the tiny core pretrained on GSM8K train text for a fixed number of CPU
minutes, validation perplexity on GSM8K test text, against a unigram baseline on the same
tokens computed in the same run.

    .venv/bin/python benchmarks/clm_gsm8k.py [--minutes 5] [--data ../shared/data/gsm8k]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from pathlib import Path

import lightning as L
import torch

from mmr1.datamodules.text import TextDataModule
from mmr1.objectives import CLMModule

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"


def unigram_perplexity(datamodule: TextDataModule) -> float:
    """Add-one-smoothed unigram model fitted on the train blocks, scored on the val blocks' targets."""
    counts = Counter()
    for batch in datamodule.train_dataloader():
        counts.update(batch["labels"][batch["labels"] != -100].tolist())
    total, vocab = sum(counts.values()), len(datamodule.tokenizer)
    nll, n = 0.0, 0
    for batch in datamodule.val_dataloader():
        targets = batch["labels"][:, 1:]  # the tokens the language model is scored on
        for token in targets[targets != -100].tolist():
            nll -= math.log((counts[token] + 1) / (total + vocab))
            n += 1
    return math.exp(nll / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--val-batches", type=int, default=None, help="limit validation (default: all of test)")
    args = parser.parse_args()
    L.seed_everything(0, verbose=False)
    module = CLMModule(preset="tiny", overrides={"vision": None, "audio": None, "text": None}, lr=2e-3,
                       warmup_steps=50)
    data = TextDataModule([str(args.data / "train.jsonl")], [str(args.data / "test.jsonl")], vocab_size=512,
                          block_size=args.block_size, batch_size=args.batch_size, config=module.config)
    trainer = L.Trainer(accelerator="auto", devices=1, max_time={"minutes": args.minutes}, max_steps=args.max_steps,
                        max_epochs=-1, logger=False, enable_checkpointing=False, limit_val_batches=0,
                        enable_progress_bar=False, enable_model_summary=False)
    start = time.perf_counter()
    trainer.fit(module, data)
    minutes = (time.perf_counter() - start) / 60
    steps = trainer.global_step
    trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=args.val_batches)
    perplexity = trainer.validate(module, data, verbose=False)[0]["val/perplexity"]
    baseline = unigram_perplexity(data)
    print(f"tiny core ({sum(p.numel() for p in module.model.core.parameters()) / 1e6:.2f}M params), BPE "
          f"{len(data.tokenizer)} tokens, {steps} steps of {args.batch_size}x{args.block_size} tokens "
          f"in {minutes:.1f} CPU-minutes ({torch.get_num_threads()} threads)")
    print(f"GSM8K test perplexity: tiny core {perplexity:.2f}   unigram baseline {baseline:.2f}   "
          f"ratio {baseline / perplexity:.2f}x")


if __name__ == "__main__":
    main()
