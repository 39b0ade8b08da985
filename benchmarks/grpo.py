"""Where a GRPO step's time goes, and what the shared-prefix rollout saves (GitHub issue 5).

    .venv/bin/python benchmarks/grpo.py [--preset tiny --prompts 8 --group 4 --new 48 --warmup 1 --steps 3 --repeats 5]

Times one GRPO step on the built-in synthetic prompts, phase by phase, with the functions
`GRPOModule.training_step` calls: rollout (`sample_groups`), reward (`decode_completions`,
`Rewards`, `GRPOModule.advantages`), reference/old log-probs (`GRPOModule.fixed_logprobs`) and
update (`GRPOModule.micro_batch_loss`, backward per micro-batch, gradient clipping, AdamW step),
the policy in the eval mode the module trains it in (`deterministic`). Prints the mean time of
each phase and the rollout's tokens/s.

Then compares, on one batch with the same B, G and new tokens, the shared-prefix rollout
(`sample_groups`: media prefix and prompt encoded once per prompt, KV cache repeated G times)
with a naive one that repeats the batch G times and calls `model.generate`, re-encoding the
prefix and prompt for every sample. The two take turns --repeats times; prints the best time
of each and their ratio.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

from mmr1.datamodules.datamodules import RLPromptDataModule
from mmr1.model import media_inputs
from mmr1.objectives.base import deterministic
from mmr1.objectives.grpo import GRPOModule
from mmr1.rl.rollout import decode_completions, micro_batches, sample_groups


class PhaseTimer:
    """Wall-clock seconds per named phase, summed over the steps (waits for the GPU at each edge)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, phase: str):
        self.sync()
        start = time.perf_counter()
        yield
        self.sync()
        self.seconds[phase] += time.perf_counter() - start


def grpo_step(module: GRPOModule, optimizer, scheduler, batch: dict, timer: PhaseTimer) -> int:
    """One GRPO optimizer step as `GRPOModule.training_step` takes it; returns the tokens sampled."""
    h, G = module.hparams, module.hparams.group_size
    deterministic(module.model)
    with timer("rollout"):
        rollout = sample_groups(module.model, batch, G, h.max_new_tokens, h.temperature, top_p=h.top_p,
                                eos_token_id=module.tokenizer.eos_id)
    with timer("reward"):
        completions = decode_completions(module.tokenizer, rollout.completion_ids)
        total, _ = module.rewards(completions, [{"answer": a} for a in batch["answers"] for _ in range(G)])
        advantages, _ = module.advantages(torch.tensor(total, device=timer.device))  # [B*G]
    with timer("reference/old log-probs"):
        ref, old = module.fixed_logprobs(batch, rollout)
    with timer("update"):
        for _ in range(h.ppo_epochs):
            for rows in micro_batches(advantages.numel(), h.micro_batch_size):
                module.micro_batch_loss(batch, rollout, advantages, ref, old, rows).loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), h.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
    return int(rollout.lengths.sum())


@torch.no_grad()
def naive_rollout(module: GRPOModule, batch: dict) -> torch.Tensor:
    """[B*G, T + L]: the batch repeated G times, each copy's prefix and prompt encoded on its own."""
    h, G = module.hparams, module.hparams.group_size
    repeated = {k: v.repeat_interleave(G, dim=0) for k, v in media_inputs(batch).items()}
    module.model.eval()
    try:
        return module.model.generate(
            batch["input_ids"].repeat_interleave(G, dim=0), batch["attention_mask"].repeat_interleave(G, dim=0),
            generation=dict(max_new_tokens=h.max_new_tokens, do_sample=True, temperature=h.temperature,
                            top_p=h.top_p, eos_token_id=module.tokenizer.eos_id), **repeated)
    finally:
        module.model.train()


def shared_rollout(module: GRPOModule, batch: dict) -> torch.Tensor:
    """[B*G, L] sampled by `sample_groups`, the rollout GRPO trains on."""
    h = module.hparams
    return sample_groups(module.model, batch, h.group_size, h.max_new_tokens, h.temperature, top_p=h.top_p,
                         eos_token_id=module.tokenizer.eos_id).completion_ids


def compare_rollouts(module: GRPOModule, batch: dict, timer: PhaseTimer, repeats: int) -> dict[str, tuple[float, int]]:
    """name -> (best seconds, tokens decoded: rows x decoding steps) of each rollout, taking turns
    `repeats` times after a warm-up so that a busy machine slows both alike."""
    rollouts = {"shared": shared_rollout, "naive": naive_rollout}
    prompt_length = {"shared": 0, "naive": batch["input_ids"].shape[1]}  # generate returns prompt + completion
    best = {name: (float("inf"), 0) for name in rollouts}
    for turn in range(repeats + 1):
        for name, rollout in rollouts.items():
            timer.seconds.clear()
            with timer(name):
                out = rollout(module, batch)
            tokens = out.shape[0] * (out.shape[1] - prompt_length[name])
            if turn and timer.seconds[name] < best[name][0]:
                best[name] = (timer.seconds[name], tokens)
    return best


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--prompts", type=int, default=8, help="B prompts per step")
    parser.add_argument("--group", type=int, default=4, help="G samples per prompt")
    parser.add_argument("--new", type=int, default=48, help="max new tokens per sample")
    parser.add_argument("--micro-batch", type=int, default=16, help="sequences per backward (a multiple of G)")
    parser.add_argument("--ppo-epochs", type=int, default=1, help="updates per rollout; >1 adds old log-probs")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps")
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each rollout in the comparison")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    torch.manual_seed(0)
    module = GRPOModule(preset=args.preset, group_size=args.group, micro_batch_size=args.micro_batch,
                        ppo_epochs=args.ppo_epochs, max_new_tokens=args.new).to(device)
    module.reference.to(device)
    data = RLPromptDataModule(config=module.config, batch_size=args.prompts)
    data.setup("fit")
    module.tokenizer = data.collator.tokenizer
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    batches = iter(data.train_dataloader())

    timer = PhaseTimer(device)
    for _ in range(args.warmup):
        grpo_step(module, optimizer, scheduler, to_device(next(batches), device), timer)
    timer.seconds.clear()
    sampled = sum(grpo_step(module, optimizer, scheduler, to_device(next(batches), device), timer)
                  for _ in range(args.steps))

    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"{args.preset} GRPO step on synthetic prompts: B={args.prompts} prompts x G={args.group} samples, "
          f"{args.new} new tokens, micro-batch {args.micro_batch}, {device.type}{threads}; "
          f"mean of {args.steps} steps after {args.warmup} warm-up")
    step = sum(timer.seconds.values())
    for phase, seconds in timer.seconds.items():
        extra = f"  {sampled / seconds:.0f} tokens/s ({sampled / args.steps:.0f} sampled per step)" \
            if phase == "rollout" else ""
        print(f"  {phase:<24}: {seconds / args.steps * 1e3:8.1f} ms  {100 * seconds / step:3.0f}%{extra}")
    print(f"  {'step':<24}: {step / args.steps * 1e3:8.1f} ms")

    batch = to_device(next(batches), device)
    with torch.no_grad():
        prefix = module.model.prefix(**media_inputs(batch))
    best = compare_rollouts(module, batch, timer, args.repeats)
    print(f"rollout of one batch, B={args.prompts} x G={args.group}, {args.new} new tokens, prefix "
          f"{0 if prefix is None else prefix.embeds.shape[1]} + prompt {batch['input_ids'].shape[1]} tokens, "
          f"best of {args.repeats} taking turns:")
    (shared, shared_tokens), (naive, naive_tokens) = best["shared"], best["naive"]
    print(f"  shared prefix cache (sample_groups)  : {shared * 1e3:8.1f} ms  {shared_tokens / shared:.0f} tokens/s")
    print(f"  naive, prefix re-encoded per sample  : {naive * 1e3:8.1f} ms  {naive_tokens / naive:.0f} tokens/s")
    print(f"ratio naive / shared rollout time: {naive / shared:.2f}x")


if __name__ == "__main__":
    main()
