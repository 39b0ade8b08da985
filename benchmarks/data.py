"""Throughput of the data layer on this machine: `python benchmarks/data.py [--n 512]`.

Times synthetic generation, tokenization, and full SFT batches (decode + process + collate)
from the in-memory generator and from a manifest on disk, with 0 and 2 loader workers, and
compares the loader with what a `tiny` SFT training step consumes (forward + backward +
AdamW on the same batches): the loader must supply at least 3x the step's rate.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Callable

import torch
from torch.utils.data import DataLoader

from mmr1.config import Config
from mmr1.datamodules.collate import Collator
from mmr1.datamodules.manifest import ManifestDataset
from mmr1.datamodules.prompt import format_prompt, format_response
from mmr1.datamodules.records import RecordProcessor
from mmr1.datamodules.synth import Synth, write
from mmr1.datamodules.synth_dataset import SynthDataset
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.model import MultimodalModel


def rate(n: int, work: Callable[[], object]) -> float:
    """Items per second of `work`, which handles n items."""
    start = time.perf_counter()
    work()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=512, help="records per measurement")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    n, config, tokenizer = args.n, Config.from_name("tiny"), Tokenizer.default()
    synth = Synth(seed=0)
    processors = RecordProcessor.from_config(config, train=True)
    collator = Collator(tokenizer, "sft")
    texts = [format_prompt(s.question, ["image", "audio"]) + format_response(s.reasoning, s.answer)
             for s in (synth.spec(i) for i in range(n))]
    rows = [("synth spec (text only)", rate(n, lambda: [synth.spec(i) for i in range(n)])),
            ("synth record (rendered)", rate(n, lambda: [synth.record(i) for i in range(n)])),
            ("tokenize prompt+response", rate(n, lambda: [tokenizer.encode(t) for t in texts]))]
    with tempfile.TemporaryDirectory() as folder:
        manifest = write(folder, n, seed=0)
        for name, dataset in (("synth", SynthDataset(synth, n, processors)),
                              ("manifest", ManifestDataset(manifest, processors, "sft"))):
            for workers in (0, 2):
                loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=workers, collate_fn=collator)
                rows.append((f"SFT batches from {name}, {workers} workers", rate(n, lambda: list(loader))))
        step = training_rate(config, list(DataLoader(SynthDataset(synth, 4 * args.batch_size, processors),
                                                      batch_size=args.batch_size, collate_fn=collator)))
    rows.append(("tiny SFT training step consumes", step))
    print(f"{'stage':<40}{'records/s':>12}")
    for name, value in rows:
        print(f"{name:<40}{value:>12.0f}")
    loader = dict(rows)["SFT batches from synth, 2 workers"]
    print(f"ratio loader (synth, 2 workers) / training step: {loader / step:.1f}x (target >= 3x)")


def training_rate(config: Config, batches: list[dict]) -> float:
    """Records/s that forward + backward + AdamW of the tiny model get through."""
    model = MultimodalModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch: dict) -> None:
        inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "labels"}
        out, _ = model(**inputs)
        logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)).backward()
        optimizer.step()
        optimizer.zero_grad()

    step(batches[0])  # warm-up
    n = sum(len(b["input_ids"]) for b in batches)
    return rate(n, lambda: [step(b) for b in batches])


if __name__ == "__main__":
    main()
