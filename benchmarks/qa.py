"""Question-answering throughput and latency to first token, fp32 against int8, by preset and batch size.

    .venv/bin/python benchmarks/qa.py [--presets tiny small --batch-sizes 1 8 32 --new-tokens 32 --repeats 2]

Untrained models answer synthetic image+audio questions with a fixed number of new tokens
(the end token is ignored), so every configuration does the same work. Prints a table:
answers/s, ms to the first token of the batch, ms per decoding step, and for int8 the share
of greedy tokens equal to fp32's.
"""

from __future__ import annotations

import argparse
import time

import torch

from mmr1.compress import quantize_int8, size_mb
from mmr1.config import Config
from mmr1.datamodules.synth import Synth
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.inference import QAPipeline
from mmr1.model import MultimodalModel


def time_batch(qa: QAPipeline, examples: list[dict], new_tokens: int) -> tuple[float, float, list[str]]:
    """(seconds to the first token, seconds for the whole batch, the texts) for one greedy batch."""
    batch = qa._batch(examples)
    options = {"max_new_tokens": new_tokens, "eos_token_id": None}
    start = time.perf_counter()
    stream = qa.model.stream(generation=options, **batch)
    first = [next(stream)]
    ttft = time.perf_counter() - start
    tokens = torch.stack(first + list(stream), dim=1)  # [B, new]
    total = time.perf_counter() - start
    return ttft, total, [qa.tokenizer.decode(row) for row in tokens.tolist()]


def best(qa: QAPipeline, examples: list[dict], new_tokens: int, repeats: int) -> tuple[float, float, list[str]]:
    time_batch(qa, examples[:1], 2)  # warm-up
    runs = [time_batch(qa, examples, new_tokens) for _ in range(repeats)]
    return min(r[0] for r in runs), min(r[1] for r in runs), runs[0][2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = Tokenizer.default()
    print(f"CPU, {torch.get_num_threads()} threads, {args.new_tokens} new tokens per answer, greedy, "
          f"best of {args.repeats}")
    print(f"{'preset':<7}{'dtype':<6}{'MB':>7}{'batch':>6}{'answers/s':>11}{'first token ms':>16}"
          f"{'ms/step':>9}{'same as fp32':>14}")
    for preset in args.presets:
        torch.manual_seed(0)
        config = Config.from_name(preset)
        fp32 = MultimodalModel(config).eval()
        models = {"fp32": fp32, "int8": quantize_int8(fp32)[0]}
        synth = Synth(seed=0, split="test", image_size=config.vision.image_size)
        records = [synth.record(i) for i in range(max(args.batch_sizes))]
        reference: dict[int, list[str]] = {}
        for dtype, model in models.items():
            qa = QAPipeline(model, tokenizer)
            examples = [qa.example(r["question"], r["image"], r["audio"], r["sample_rate"]) for r in records]
            for batch_size in args.batch_sizes:
                ttft, total, texts = best(qa, examples[:batch_size], args.new_tokens, args.repeats)
                reference.setdefault(batch_size, texts)
                same = sum(a == b for a, b in zip(texts, reference[batch_size])) / batch_size
                step_ms = 1000 * (total - ttft) / max(1, args.new_tokens - 1)
                print(f"{preset:<7}{dtype:<6}{size_mb(model):7.1f}{batch_size:6d}{batch_size / total:11.2f}"
                      f"{1000 * ttft:16.1f}{step_ms:9.1f}{same:14.0%}")


if __name__ == "__main__":
    main()
