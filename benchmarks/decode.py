"""Greedy decoding speed of mmr1's core (with its KV cache) against transformers'
LlamaForCausalLM.generate on the same weights, and cached against uncached decoding.

    .venv/bin/python benchmarks/decode.py [--batch 8 --prompt 64 --new 128 --repeats 3]

Prints tokens/s for each and the ratios (mmr1 / transformers; cached / uncached).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mmr1.core import ReasoningCore


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.inference_mode()
def uncached_greedy(core: ReasoningCore, ids: torch.Tensor, new: int) -> torch.Tensor:
    """The baseline a cache is for: re-run the whole sequence for every new token."""
    for _ in range(new):
        ids = torch.cat((ids, core(ids, logits_to_keep=1).logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf_config = LlamaConfig(vocab_size=8192, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                            num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
                            pad_token_id=0, bos_token_id=1, eos_token_id=None, tie_word_embeddings=True)
    hf = LlamaForCausalLM(hf_config).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        core = ReasoningCore.from_hf(folder).eval()
    ids = torch.randint(3, hf_config.vocab_size, (args.batch, args.prompt))

    ours = core.generate(ids, max_new_tokens=args.new, eos_token_id=None)
    theirs = hf.generate(ids, max_new_tokens=args.new, do_sample=False, min_new_tokens=args.new)
    same = torch.equal(ours, theirs)

    new_tokens = args.batch * args.new
    t_ours = best_time(lambda: core.generate(ids, max_new_tokens=args.new, eos_token_id=None), args.repeats)
    t_hf = best_time(lambda: hf.generate(ids, max_new_tokens=args.new, do_sample=False,
                                         min_new_tokens=args.new), args.repeats)
    t_uncached = best_time(lambda: uncached_greedy(core, ids, args.new), 1)
    print(f"config: Llama-style core d=512 L=8 heads 8/2 vocab 8192 ({sum(p.numel() for p in core.parameters()) / 1e6:.1f}M"
          f" params); batch {args.batch}, prompt {args.prompt}, {args.new} new tokens, fp32, CPU, "
          f"{torch.get_num_threads()} threads")
    print(f"same greedy tokens as transformers: {same}")
    print(f"mmr1 core + KV cache      : {new_tokens / t_ours:8.1f} tokens/s")
    print(f"transformers generate     : {new_tokens / t_hf:8.1f} tokens/s")
    print(f"mmr1 without cache        : {new_tokens / t_uncached:8.1f} tokens/s")
    print(f"ratio mmr1 / transformers : {t_hf / t_ours:.2f}x")
    print(f"ratio cached / uncached   : {t_uncached / t_ours:.2f}x")


if __name__ == "__main__":
    main()
