"""One SFT training step on the real SmolLM2-135M-Instruct: mmr1 (`SFTModule` on the `mmr1 import` of the
model, LoRA through `ObjectiveModule(lora=...)`) against transformers' LlamaForCausalLM + peft's LoRA, the
same weights, the same batch and the same optimiser, timed in one run.

    .venv/bin/python benchmarks/sft_smollm2.py [--gguf FILE | --hf FOLDER] [--batch 4 --steps 5 --threads 2]
        [--full]    also full fine-tuning (every weight trains) instead of LoRA on both sides

The batch is real: the first `--batch` GSM8K training problems in the R1 answer format, rendered by
mmr1's SFT collator (chat template, prompt tokens masked with -100), as `configs/smollm2_gsm8k_sft.yaml`
trains on them. transformers gets the same token ids, labels and mask; its vocabulary is grown to mmr1's
(the <think>/<answer> rows copied from the import), so both compute the same loss, which the run checks
before timing. LoRA on both sides: rank 16, alpha 32, no dropout, on q/k/v/o/gate/up/down projections of
every layer (the shipped config, without its trainable token rows, which peft does differently). A step is
forward + loss + backward + `torch.optim.AdamW` on the trainable weights; steps alternate between the two,
and the fastest of `--steps` (after one warm-up) counts, the least disturbed on a shared machine.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from decode_smollm2 import add_model_source, best_times, model_source
from grpo_smollm2 import GSM8K_TRAIN, problems

from mmr1.config import Config
from mmr1.datamodules.collate import Collator
from mmr1.hf_import import import_pretrained, load_transformers
from mmr1.objectives import SFTModule

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA = 16, 32  # the LoRA of configs/smollm2_gsm8k_sft.yaml, on both sides


def gsm8k_batch(folder: Path, batch: int, source: Path) -> dict:
    """input_ids / attention_mask / labels [B, T] of the first `batch` GSM8K problems, as mmr1's SFT trains."""
    records = [{**record, "pixel_values": None, "audio_values": None} for record in problems(source, batch)]
    collate = Collator.for_model(Config.from_checkpoint(folder), "sft", tokenizer=str(folder))
    out = collate(records)
    return {key: out[key] for key in ("input_ids", "attention_mask", "labels")}


def step_timer(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], float]:
    """One training step (forward, loss, backward, AdamW on the trainable weights) as a function -> loss."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step() -> float:
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def compare(folder: Path, hf_source: tuple, batch: dict, lora: bool, steps: int) -> None:
    from peft import LoraConfig, get_peft_model

    settings = {"r": RANK, "alpha": ALPHA, "dropout": 0.0, "targets": TARGETS, "parts": ["core"]}
    ours = SFTModule(init_from=str(folder), lora=settings if lora else None, lr=1e-5).train()
    hf, _ = load_transformers(*hf_source)
    hf.resize_token_embeddings(ours.config.core.vocab_size)  # mmr1's special tokens, rows as imported
    with torch.no_grad():
        hf.get_input_embeddings().weight.copy_(ours.model.core.embed_tokens.weight)
        if hf.get_output_embeddings().weight is not hf.get_input_embeddings().weight:  # an untied LM head
            hf.get_output_embeddings().weight.copy_(ours.model.core.lm_head.weight)
    if lora:
        hf = get_peft_model(hf, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS))
    hf.train()

    def their_loss() -> torch.Tensor:
        return hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss

    with torch.no_grad():
        first = float(ours.losses(batch)["loss"]), float(their_loss())
    trainable = sum(p.numel() for p in ours.parameters() if p.requires_grad) / 1e6
    their_trainable = sum(p.numel() for p in hf.parameters() if p.requires_grad) / 1e6
    name = f"LoRA r{RANK}" if lora else "full fine-tuning"
    print(f"{name}: loss before training: mmr1 {first[0]:.5f}, transformers {first[1]:.5f} "
          f"(|difference| {abs(first[0] - first[1]):.1e}); trainable weights {trainable:.2f}M / {their_trainable:.2f}M")
    ours_step = step_timer(ours, lambda: ours.losses(batch)["loss"])
    their_step = step_timer(hf, their_loss)
    ours_step(), their_step()  # warm-up: AdamW state, allocator
    t_ours, t_hf = best_times([ours_step, their_step], steps)
    tokens = int(batch["attention_mask"].sum())
    print(f"{name}: mmr1 {t_ours * 1e3:7.0f} ms/step ({tokens / t_ours:6.0f} tokens/s) | "
          f"{'transformers + peft' if lora else 'transformers'} {t_hf * 1e3:7.0f} ms/step ({tokens / t_hf:6.0f} tokens/s) | "
          f"time mmr1 / transformers {t_ours / t_hf:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_source(parser)
    parser.add_argument("--gsm8k", type=Path, default=GSM8K_TRAIN, help="GSM8K JSONL the batch comes from")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each (after one warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--full", action="store_true", help="also time full fine-tuning")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf_source = model_source(args)
    with tempfile.TemporaryDirectory() as tmp:
        hf, hf_tokenizer = load_transformers(*hf_source)
        folder = import_pretrained(hf, hf_tokenizer, Path(tmp) / "imported")
        del hf
        batch = gsm8k_batch(folder, args.batch, args.gsm8k)
        print(f"model: {(hf_source[0] or hf_source[1]).name}; batch {tuple(batch['input_ids'].shape)} of GSM8K "
              f"problems ({int(batch['attention_mask'].sum())} tokens, {int((batch['labels'] != -100).sum())} "
              f"trained on); fp32, CPU, {torch.get_num_threads()} threads; fastest of {args.steps} steps")
        for lora in (True, False) if args.full else (True,):
            compare(folder, hf_source, batch, lora, args.steps)


if __name__ == "__main__":
    main()
