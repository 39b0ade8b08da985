"""One GRPO step on the real SmolLM2-135M-Instruct: mmr1's `GRPOModule` (on the `mmr1 import` of the model,
trained by a Lightning Trainer as `mmr1 fit` trains) against TRL's `GRPOTrainer` on transformers'
LlamaForCausalLM, the same weights, prompts and settings, timed in one run.

    .venv/bin/python benchmarks/grpo_smollm2.py [--gguf FILE | --hf FOLDER] [--prompts 2 --group 4 --new 64]
        [--steps 3 --threads 2]

A step is what each library calls one: sample G responses to each of B prompts, score them, take the
reference model's log-probs, and make one optimizer update on the B*G responses (one micro-batch). mmr1 reads
each prompt once per group when it scores (prefix sharing); it is also timed reading it once per response,
as releases before that did, as a baseline in the same run. Both
run full fine-tuning in fp32 on the CPU with the same settings: temperature 1, top-p 1, KL weight
beta 0.04 to a frozen reference, clip 0.2, per-response mean token loss (`loss_type: grpo` in both),
group-normalised advantages, dropout off, AdamW, and the same rewards (mmr1's accuracy 1.0 + format 0.5
on the decoded text). Prompts are the first GSM8K training problems in the model's chat template. The
pretrained model writes long answers, so nearly every response runs to `--new` tokens on both sides; the
run prints the mean response length of each, so the work compared is seen to be equal. The first step of
each is a warm-up; the fastest of the next `--steps` counts (the least disturbed on a shared machine).

Needs TRL (`pip install trl`; the dev extra installs it).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from decode_smollm2 import add_model_source, model_source

from mmr1.datamodules.gsm8k import read_gsm8k
from mmr1.datamodules.prompt import INSTRUCTION
from mmr1.hf_import import import_pretrained, load_transformers
from mmr1.rl.rewards import Rewards

ROOT = Path(__file__).resolve().parents[1]
GSM8K_TRAIN = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
REWARDS = {"accuracy": 1.0, "format": 0.5}


def problems(source: Path, n: int) -> list[dict]:
    """The first n GSM8K problems as mmr1 records."""
    records = []
    for record in read_gsm8k(source):
        records.append(record)
        if len(records) == n:
            return records
    raise ValueError(f"--gsm8k: {source} has {len(records)} problems; {n} are needed")


class StepTimes:
    """Wall seconds of each training step, from either library's step hooks."""

    def __init__(self):
        self.seconds: list[float] = []
        self._start = 0.0

    def begin(self) -> None:
        self._start = time.perf_counter()

    def end(self) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def time_mmr1(folder: Path, records: list[dict], args, out: Path, share_prompt: bool = True) -> tuple[StepTimes, float]:
    """mmr1: GRPOModule on an RLPromptDataModule, one Lightning step per GRPO step. share_prompt False scores
    prompt + response once per response, as releases before prefix sharing did (the in-run baseline)."""
    import lightning as L

    from mmr1.datamodules.datamodules import RLPromptDataModule
    from mmr1.objectives import GRPOModule

    manifest = out / "prompts.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    module_class = GRPOModule if share_prompt else type("GRPOEveryCopy", (GRPOModule,), {"shares_prompt": False})
    module = module_class(init_from=str(folder), group_size=args.group, micro_batch_size=args.prompts * args.group,
                        max_new_tokens=args.new, beta=0.04, clip_eps=0.2, loss_type="grpo", lr=1e-6,
                        warmup_steps=0, rewards=REWARDS)
    data = RLPromptDataModule(config=module.config, train_manifest=str(manifest), val_manifest=str(manifest),
                              tokenizer=str(folder), batch_size=args.prompts, seed=0)
    times, lengths = StepTimes(), []

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            times.begin()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            times.end()
            lengths.append(float(trainer.callback_metrics["train/response_length"]))

    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=args.steps + 1, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Timer()], default_root_dir=out)
    trainer.fit(module, data)
    return times, sum(lengths[1:]) / max(1, len(lengths) - 1)


def time_trl(hf_folder: Path, records: list[dict], args, out: Path) -> tuple[StepTimes, float]:
    """TRL: GRPOTrainer given the Hugging Face folder of the model (TRL loads the policy and its reference
    from it, in fp32), the same prompts in the model's chat template."""
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(hf_folder))
    rewards = Rewards(REWARDS)

    def reward(completions, answer, **_) -> list[float]:  # conversational: each completion is [assistant message]
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return rewards(texts, [{"answer": a} for a in answer])[0]

    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["question"] + INSTRUCTION}],
                                  "answer": r["answer"]} for r in records])
    config = GRPOConfig(output_dir=str(out), per_device_train_batch_size=args.prompts * args.group,
                        num_generations=args.group, max_completion_length=args.new, temperature=1.0, top_p=1.0,
                        beta=0.04, epsilon=0.2, loss_type="grpo", scale_rewards="group", learning_rate=1e-6,
                        lr_scheduler_type="constant", warmup_steps=0, max_steps=args.steps + 1,
                        gradient_accumulation_steps=1, num_iterations=1, disable_dropout=True, use_cpu=True,
                        bf16=False, fp16=False, logging_steps=1, report_to="none", save_strategy="no",
                        shuffle_dataset=False, seed=0, dataloader_num_workers=0)
    times, lengths = StepTimes(), []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            times.begin()

        def on_step_end(self, *a, **k):
            times.end()

        def on_log(self, _args, state, control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    trainer = GRPOTrainer(model=str(hf_folder), reward_funcs=[reward], args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[Timer()])
    trainer.train()
    return times, sum(lengths[1:]) / max(1, len(lengths) - 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_source(parser)
    parser.add_argument("--gsm8k", type=Path, default=GSM8K_TRAIN, help="GSM8K JSONL the prompts come from")
    parser.add_argument("--prompts", type=int, default=2, help="B: prompts per step")
    parser.add_argument("--group", type=int, default=4, help="G: responses per prompt")
    parser.add_argument("--new", type=int, default=64, help="most new tokens per response")
    parser.add_argument("--steps", type=int, default=3, help="timed steps of each (after one warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    hf_source = model_source(args)
    records = problems(args.gsm8k, args.prompts * (args.steps + 1))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hf, hf_tokenizer = load_transformers(*hf_source)
        folder = import_pretrained(hf, hf_tokenizer, tmp / "imported")
        hf.save_pretrained(tmp / "hf")  # the same weights as a plain Hugging Face folder, for TRL
        hf_tokenizer.save_pretrained(tmp / "hf")
        del hf
        print(f"model: {(hf_source[0] or hf_source[1]).name}; B={args.prompts} prompts x G={args.group} responses "
              f"of at most {args.new} tokens per step, beta 0.04, full fine-tuning, fp32, CPU, "
              f"{torch.get_num_threads()} threads; fastest of {args.steps} steps after one warm-up")
        torch.manual_seed(0)
        ours, our_length = time_mmr1(folder, records, args, tmp)
        torch.manual_seed(0)
        copies, _ = time_mmr1(folder, records, args, tmp, share_prompt=False)
        torch.manual_seed(0)
        theirs, their_length = time_trl(tmp / "hf", records, args, tmp / "trl")
    t_ours, t_copies, t_trl = (min(times.seconds[1:]) for times in (ours, copies, theirs))
    print(f"mean response length: mmr1 {our_length:.1f} tokens, TRL {their_length:.1f} tokens")
    print(f"mmr1 scoring each prompt once per group / once per response (share_prompt off): {t_ours:.2f} s / "
          f"{t_copies:.2f} s = {t_ours / t_copies:.2f}")
    print(f"GRPO step: mmr1 {t_ours:6.2f} s | TRL GRPOTrainer {t_trl:6.2f} s | time mmr1 / TRL {t_ours / t_trl:.2f}")


if __name__ == "__main__":
    main()
