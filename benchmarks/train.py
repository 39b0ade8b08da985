"""Training throughput and model FLOPs utilisation (MFU) of mmr1 beside transformers' Llama.

    .venv/bin/python benchmarks/train.py [--presets tiny small --batch 8 --seq 128 --steps 3 --threads 1]
    .venv/bin/python benchmarks/train.py --presets tiny --batch 2 --seq 32 --steps 2   # smoke test, < 60 s

For each preset it trains, on random token ids with next-token cross-entropy and AdamW:
mmr1's reasoning core without the Iterative Refinement Module (`n_refine_iters=0`), the core
as the preset builds it (with the IRM), and transformers' `LlamaForCausalLM` of the same width,
depth, heads, kv heads, intermediate size, vocabulary and sequence length; then the whole
`MultimodalModel` with the SFT loss on a synthetic `SFTDataModule` batch (its own lengths).

FLOPs per step are what `torch.utils.flop_counter.FlopCounterMode` counts (matmuls, attention,
convolutions) over one forward + backward; the optimiser's elementwise work is not counted.
MFU is those FLOPs per second of training divided by this machine's rate for a 2048 x 2048
matmul in the same precision, measured in this run before every model; the fastest matmul and
the fastest timed step count, the least disturbed figures on a shared machine. Peak memory is
`mmr1.scaling.PeakMemory` over one whole step (activations, gradients, the optimiser's
temporaries; not the parameters or AdamW's state, made in the warm-up step). bf16-mixed rows
(`torch.autocast("cpu", dtype=torch.bfloat16)` around forward and loss) run where a bf16
matmul beats fp32 on this CPU; `--no-bf16` skips them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM

from mmr1.config import Config, CoreConfig
from mmr1.core import ReasoningCore
from mmr1.datamodules.datamodules import SFTDataModule
from mmr1.model import MultimodalModel, media_inputs
from mmr1.losses.language import sft_loss
from mmr1.scaling import PeakMemory


@dataclass
class Workload:
    """A model and the loss of one training batch; `rows` samples per step."""

    name: str
    preset: str
    model: nn.Module
    loss: Callable[[], torch.Tensor]
    rows: int
    shape: str  # what one batch is, for the table


@dataclass
class Result:
    workload: Workload
    precision: str
    flops: int  # forward + backward, per step
    seconds: float  # fastest timed step (the least disturbed on a shared machine)
    peak_bytes: int

    @property
    def samples_per_s(self) -> float:
        return self.workload.rows / self.seconds

    def mfu(self, matmul_rate: float) -> float:
        return self.flops / self.seconds / matmul_rate


def matmul_rate(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` [size, size] @ [size, size] matmuls (2 * size^3 FLOPs each)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def llama_like(cfg: CoreConfig) -> LlamaForCausalLM:
    """transformers' Llama with the core's sizes (the core's RMSNorm, RoPE, GQA and SwiGLU are Llama's)."""
    if cfg.attention != "gqa" or cfg.n_routed_experts or cfg.qkv_bias:
        raise ValueError("core: only a dense GQA core without q/k/v biases has a Llama twin")
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_base},
        tie_word_embeddings=cfg.tie_embeddings, initializer_range=cfg.initializer_range,
        pad_token_id=cfg.pad_token_id, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id))


def language_workloads(preset: str, batch: int, seq: int) -> list[Workload]:
    """mmr1's core without and with the IRM, and its Llama twin, on the same random ids."""
    cfg = Config.from_name(preset).core
    if seq > cfg.max_seq_len:
        raise ValueError(f"--seq {seq} exceeds core.max_seq_len={cfg.max_seq_len} of preset {preset!r}")
    ids = torch.randint(3, cfg.vocab_size, (batch, seq))  # [B, T]
    torch.manual_seed(0)
    plain = ReasoningCore(Config.from_name(preset, core={"n_refine_iters": 0}).core)
    with_irm = ReasoningCore(cfg)
    llama = llama_like(cfg)
    shape = f"{batch}x{seq} ids"
    return [
        Workload("mmr1 core, no IRM", preset, plain, lambda: sft_loss(plain(ids).logits, ids), batch, shape),
        Workload(f"mmr1 core, IRM x{cfg.n_refine_iters}", preset, with_irm,
                 lambda: sft_loss(with_irm(ids).logits, ids), batch, shape),
        Workload("transformers Llama", preset, llama, lambda: sft_loss(llama(input_ids=ids).logits, ids), batch, shape),
    ]


def multimodal_workload(preset: str, batch: int) -> Workload:
    """The whole model with the SFT loss on one synthetic image/audio/text batch."""
    config = Config.from_name(preset)
    data = SFTDataModule(config=config, batch_size=batch, synth_train_size=batch, augment=False)
    data.setup("fit")
    inputs = next(iter(data.train_dataloader()))
    torch.manual_seed(0)
    model = MultimodalModel(config)

    def loss() -> torch.Tensor:
        out, _ = model(inputs["input_ids"], inputs["attention_mask"], **media_inputs(inputs))
        return sft_loss(out.logits, inputs["labels"])  # logits [B, T, V]

    return Workload("mmr1 multimodal SFT", preset, model, loss, batch,
                    f"{batch}x{inputs['input_ids'].shape[1]} ids + media")


def measure(workload: Workload, precision: str, steps: int) -> Result:
    """Warm up (creates AdamW's state), count FLOPs, take peak memory over one step, time `steps` steps."""
    model = workload.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bf16 = precision == "bf16-mixed"

    def forward_backward() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = workload.loss()
        loss.backward()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        forward_backward()
        optimizer.step()

    step()
    optimizer.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        forward_backward()
    with PeakMemory() as memory:
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return Result(workload, precision, counter.get_total_flops(), min(times), memory.peak)


def print_table(results: list[Result], rates: dict[str, float]) -> None:
    header = (f"{'model':<22} {'preset':<6} {'precision':<10} {'params':>7} {'batch':<18} {'GFLOP/step':>10} "
              f"{'ms/step':>8} {'samples/s':>9} {'MFU':>6} {'peak MiB':>8}")
    print(header)
    print("-" * len(header))
    for r in results:
        w = r.workload
        params = sum(p.numel() for p in w.model.parameters()) / 1e6
        print(f"{w.name:<22} {w.preset:<6} {r.precision:<10} {params:6.1f}M {w.shape:<18} {r.flops / 1e9:10.2f} "
              f"{r.seconds * 1e3:8.0f} {r.samples_per_s:9.1f} {100 * r.mfu(rates[r.precision]):5.1f}% "
              f"{r.peak_bytes / 2**20:8.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--batch", type=int, default=8, help="rows per step, every model")
    parser.add_argument("--seq", type=int, default=128, help="tokens per row of the language-model runs")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (the fastest counts), after one warm-up")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                        help="also run bf16-mixed rows where a bf16 matmul is faster than fp32 on this CPU")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads (more than the free cores makes OpenMP spin on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    dtypes = {"fp32": torch.float32, "bf16-mixed": torch.bfloat16}
    rates = {"fp32": matmul_rate(torch.float32)}
    print(f"CPU ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} thread(s)")
    if args.bf16:
        # A quick 512^2 probe first: where bf16 is emulated (no AVX512-BF16/AMX) a 2048^2 bf16 matmul takes minutes.
        small = {name: matmul_rate(dtype, size=512, repeats=2) for name, dtype in dtypes.items()}
        bf16_rate = matmul_rate(torch.bfloat16) if small["bf16-mixed"] > small["fp32"] else small["bf16-mixed"]
        if bf16_rate > rates["fp32"]:
            rates["bf16-mixed"] = bf16_rate
        else:
            print(f"bf16-mixed: not supported natively (matmul bf16 {bf16_rate / 1e9:.1f} GFLOP/s, "
                  f"slower than fp32 {rates['fp32'] / 1e9:.1f}); skipped")

    results = []
    for preset in args.presets:
        for workload in [*language_workloads(preset, args.batch, args.seq), multimodal_workload(preset, args.batch)]:
            for precision, rate in rates.items():
                rates[precision] = max(rate, matmul_rate(dtypes[precision]))
                results.append(measure(workload, precision, args.steps))
    print("2048^2 matmul, fastest in this run (the MFU denominator): "
          + ", ".join(f"{precision} {rate / 1e9:.1f} GFLOP/s" for precision, rate in rates.items()))
    print_table(results, rates)

    def mfu(name: str, preset: str, precision: str) -> float:
        return next(r.mfu(rates[precision]) for r in results
                    if (r.workload.name, r.workload.preset, r.precision) == (name, preset, precision))

    for precision in rates:
        for preset in args.presets:
            core, llama = mfu("mmr1 core, no IRM", preset, precision), mfu("transformers Llama", preset, precision)
            print(f"ratio mmr1 core / Llama MFU ({preset}, {precision}): {core / llama:.2f}")
        last = "small" if "small" in args.presets else args.presets[-1]
        multimodal = mfu("mmr1 multimodal SFT", last, precision)
        print(f"multimodal MFU at {last} ({precision}): {100 * multimodal:.1f}% "
              f"({multimodal / mfu('mmr1 core, no IRM', last, precision):.2f}x the core's)")
    for r in results:
        if r.precision == "bf16-mixed":
            fp32 = next(f for f in results if f.workload is r.workload and f.precision == "fp32")
            print(f"speed bf16-mixed / fp32, {r.workload.name} ({r.workload.preset}): {fp32.seconds / r.seconds:.2f}x")


if __name__ == "__main__":
    main()
