"""Memory and speed knobs of a training step: `python benchmarks/memory.py [--preset small --batch-size 8]`.

Peak memory of one SFT training step (forward + backward) with and without activation
checkpointing, measured by `mmr1.scaling.PeakMemory` (bytes of every tensor allocated during
the step while alive, parameters excluded; works on CPU, where torch keeps no allocator stats),
and the step time with and without `torch.compile` of the core blocks (after warm-up steps).
"""

from __future__ import annotations

import argparse
import time

import torch

from mmr1.datamodules.datamodules import SFTDataModule
from mmr1.objectives import SFTModule
from mmr1.scaling import PeakMemory


def build(preset: str, **knobs) -> SFTModule:
    torch.manual_seed(0)
    module = SFTModule(preset=preset, **knobs)
    module.configure_model()
    return module


def step(module: SFTModule, batch: dict) -> float:
    """One forward + backward; returns the loss."""
    module.zero_grad(set_to_none=True)
    loss = module.losses(batch)["loss"]
    loss.backward()
    return loss.item()


def peak_bytes(module: SFTModule, batch: dict) -> int:
    with PeakMemory() as memory:
        step(module, batch)
    return memory.peak


def seconds_per_step(module: SFTModule, batch: dict, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step(module, batch)
    start = time.perf_counter()
    for _ in range(steps):
        step(module, batch)
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation happens here)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    args = parser.parse_args(argv)

    data = SFTDataModule(preset=args.preset, batch_size=args.batch_size, synth_train_size=args.batch_size,
                         augment=False)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    print(f"{args.preset} SFT step, batch {args.batch_size}, input_ids {list(batch['input_ids'].shape)}")

    plain = peak_bytes(build(args.preset), batch)
    checkpointed = peak_bytes(build(args.preset, activation_checkpointing=True), batch)
    print(f"peak step memory: {plain / 2**20:.1f} MiB plain, {checkpointed / 2**20:.1f} MiB with activation "
          f"checkpointing ({100 * (1 - checkpointed / plain):.0f}% less)")

    eager = seconds_per_step(build(args.preset), batch, args.warmup, args.steps)
    compiled = seconds_per_step(build(args.preset, compile=True), batch, args.warmup, args.steps)
    print(f"step time: {eager * 1e3:.0f} ms eager, {compiled * 1e3:.0f} ms compiled "
          f"(ratio compiled / eager {compiled / eager:.2f})")


if __name__ == "__main__":
    main()
