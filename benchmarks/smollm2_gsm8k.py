"""Learning figure on a real pretrained core: SmolLM2-135M-Instruct, imported offline, SFT-tuned on real
GSM8K problems in the R1 answer format, held-out accuracy before and after. Everything runs through
`mmr1` commands and the shipped config, as a user would type them (each command is printed):

    mmr1 import --gguf --out OUT/smollm2
    mmr1 data convert gsm8k --in GSM8K/train.jsonl --out OUT/data/pool.jsonl --shortest TRAIN+SELECT
    mmr1 data convert gsm8k --in GSM8K/test.jsonl --out OUT/data/test.jsonl --shortest TEST
    mmr1 eval --checkpoint OUT/smollm2 --manifest OUT/data/test.jsonl ...         before
    mmr1 fit --config configs/smollm2_gsm8k_sft.yaml ...                           LoRA SFT (or --full)
    mmr1 eval --checkpoint <export> --manifest OUT/data/test.jsonl ...             after

The pool of the shortest training problems is split in file order: every 6th record goes to `val`, the
selection split the config's checkpointing (and any tuning) looks at; the others train. Test problems are
GSM8K's own test split, never trained or selected on. Accuracy is mmr1's one rule (`metrics.correct`: a
well-formed <think>…</think><answer>…</answer> whose answer equals the reference by value); "last number"
is a diagnostic only: the last number anywhere in the response, as lenient GSM8K scripts score it.

    .venv/bin/python benchmarks/smollm2_gsm8k.py [--out runs/smollm2_gsm8k] [--train 500] [--test 200] [--full]
        [--gguf FILE | --hf FOLDER]     another Llama/Qwen2 chat model instead of the packaged SmolLM2
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from mmr1_commands import ROOT, exported, run

from mmr1 import metrics

GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_number_right(text: str, reference: str) -> bool:
    numbers = NUMBER.findall(text)
    return bool(numbers) and metrics.answers_match(numbers[-1].rstrip(".").replace(",", ""),
                                                   reference.replace(",", ""))


def score(model: str, manifest: Path, output: Path, max_new_tokens: int) -> dict:
    summary = json.loads(run(["eval", "--checkpoint", model, "--manifest", str(manifest), "--output", str(output),
                              "--no-progress", "--batch-size", "16", "--max-new-tokens", str(max_new_tokens)])
                         .strip().splitlines()[-1])
    rows = [json.loads(line) for line in output.open()]
    summary["last_number"] = sum(last_number_right(r["text"], r["reference"]) for r in rows) / len(rows)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "smollm2_gsm8k")
    parser.add_argument("--gsm8k", type=Path, default=GSM8K)
    parser.add_argument("--train", type=int, default=500, help="training problems (the shortest)")
    parser.add_argument("--test", type=int, default=200, help="held-out test problems (the shortest)")
    parser.add_argument("--steps", type=int, default=None, help="SFT steps (default: the config's)")
    parser.add_argument("--val-every", type=int, default=None, help="validation interval in steps (default: the "
                        "config's); for short smoke runs")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA (lr 5e-5)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--gguf", type=Path, default=None, help="a GGUF file (default: the packaged SmolLM2)")
    source.add_argument("--hf", type=Path, default=None, help="a Hugging Face model folder")
    args = parser.parse_args()

    out, data = args.out, args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    imported = out / "smollm2"
    if not (imported / "config.json").is_file():
        origin = ["--hf", str(args.hf)] if args.hf else ["--gguf", *([str(args.gguf)] if args.gguf else [])]
        run(["import", *origin, "--out", str(imported)])
    n_pool = args.train + args.train // 5  # every 6th record of the pool selects
    run(["data", "convert", "gsm8k", "--in", str(args.gsm8k / "train.jsonl"), "--out", str(data / "pool.jsonl"),
         "--shortest", str(n_pool)])
    pool = (data / "pool.jsonl").read_text().splitlines(keepends=True)
    (data / "train.jsonl").write_text("".join(line for i, line in enumerate(pool) if i % 6 != 5))
    (data / "val.jsonl").write_text("".join(line for i, line in enumerate(pool) if i % 6 == 5))
    run(["data", "convert", "gsm8k", "--in", str(args.gsm8k / "test.jsonl"), "--out", str(data / "test.jsonl"),
         "--shortest", str(args.test)])

    before = score(str(imported), data / "test.jsonl", out / "before.jsonl", args.max_new_tokens)
    fit = ["fit", "--config", "configs/smollm2_gsm8k_sft.yaml", "--trainer.default_root_dir", str(out / "sft"),
           "--trainer.enable_progress_bar", "false", "--model.init_args.init_from", str(imported),
           "--data.init_args.tokenizer", str(imported), "--data.init_args.train_manifest", str(data / "train.jsonl"),
           "--data.init_args.val_manifest", str(data / "val.jsonl")]
    if args.steps is not None:
        fit += ["--trainer.max_steps", str(args.steps)]
    if args.val_every is not None:
        fit += ["--trainer.val_check_interval", str(args.val_every)]
    if args.full:
        fit += ["--model.init_args.lora", "null", "--model.init_args.lr", "0.00005"]
    start = time.perf_counter()
    tuned = exported(run(fit), "mmr1 fit")
    minutes = (time.perf_counter() - start) / 60
    after = score(tuned, data / "test.jsonl", out / "after.jsonl", args.max_new_tokens)

    print(f"\nSmolLM2-135M-Instruct, {args.test} shortest GSM8K test problems, greedy, "
          f"{'full fine-tuning' if args.full else 'LoRA'} SFT on {args.train} problems ({minutes:.1f} min)")
    print("| model | accuracy | format | last number (diagnostic) |\n|---|---|---|---|")
    for name, s in (("imported", before), ("after SFT", after)):
        cells = [f"{100 * s[key]:.1f}%" for key in ("accuracy", "format_rate", "last_number")]
        print("| " + " | ".join([name, *cells]) + " |")


if __name__ == "__main__":
    main()
