"""The R1 recipe on a real pretrained core: SmolLM2-135M-Instruct, imported offline, cold-start SFT then GRPO on
grade-school arithmetic (`mmr1 data arithmetic`: a ± b with two-digit numbers, a × b with a one-digit b, solved by
place value), held-out accuracy after each stage. Everything runs through `mmr1` commands, the shipped SFT config
and the benchmark's GRPO config (not shipped: it did not raise held-out accuracy), as a user would type them (each
command is printed):

    mmr1 import --gguf --out OUT/smollm2
    mmr1 data arithmetic --out OUT/data --train N --val V --test T
    mmr1 eval --checkpoint OUT/smollm2 --manifest OUT/data/test.jsonl ...                     imported
    mmr1 fit --config configs/smollm2_arithmetic_sft.yaml ...                                 cold-start SFT (LoRA)
    mmr1 eval --checkpoint <SFT export> --manifest OUT/data/test.jsonl ...
    mmr1 fit --config benchmarks/configs/smollm2_arithmetic_grpo.yaml ... <SFT export>        GRPO (LoRA)
    mmr1 eval --checkpoint <GRPO export> --manifest OUT/data/test.jsonl ...

`val` (problems never in train or test) is the selection split: the SFT config exports the best val/loss on it;
GRPO's lr was chosen on the val split of a separate draw (README). Test problems are never trained or selected
on. Accuracy is mmr1's one rule (`metrics.correct`: a well-formed <think>…</think><answer>…</answer> whose answer
equals the reference by value); "last number" is a diagnostic only (the last number anywhere in the response).

    .venv/bin/python benchmarks/smollm2_arithmetic.py [--out runs/smollm2_arithmetic] [--train 1000] [--test 200]
        [--gguf FILE | --hf FOLDER]     another Llama/Qwen2 chat model instead of the packaged SmolLM2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmr1_commands import ROOT, fit, run, tokenized
from smollm2_gsm8k import score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "smollm2_arithmetic")
    parser.add_argument("--train", type=int, default=1000, help="training problems")
    parser.add_argument("--val", type=int, default=200, help="selection problems")
    parser.add_argument("--test", type=int, default=200, help="held-out test problems")
    parser.add_argument("--sft-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--grpo-steps", type=int, default=None, help="default: the config's; 0 skips GRPO")
    parser.add_argument("--val-every", type=int, default=None, help="validation interval in steps (default: the "
                        "configs'); for short smoke runs")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--gguf", type=Path, default=None, help="a GGUF file (default: the packaged SmolLM2)")
    source.add_argument("--hf", type=Path, default=None, help="a Hugging Face model folder")
    args = parser.parse_args()

    out, data = args.out, args.out / "data"
    imported = out / "smollm2"
    if not (imported / "config.json").is_file():
        origin = ["--hf", str(args.hf)] if args.hf else ["--gguf", *([str(args.gguf)] if args.gguf else [])]
        run(["import", *origin, "--out", str(imported)])
    run(["data", "arithmetic", "--out", str(data), "--train", str(args.train), "--val", str(args.val),
         "--test", str(args.test)])

    stages = {"imported": (str(imported), 0.0)}
    sft, minutes = fit("configs/smollm2_arithmetic_sft.yaml", out / "sft", tokenized(data, str(imported)),
                       args.sft_steps, str(imported), args.val_every)
    stages["cold-start SFT"] = (sft, minutes)
    if args.grpo_steps != 0:
        grpo, more = fit("benchmarks/configs/smollm2_arithmetic_grpo.yaml", out / "grpo", tokenized(data, sft),
                         args.grpo_steps, sft, args.val_every)
        stages["GRPO"] = (grpo, minutes + more)
    scores = {stage: score(model, data / "test.jsonl", out / f"{stage.split()[-1].lower()}.jsonl",
                           args.max_new_tokens) for stage, (model, _) in stages.items()}

    print(f"\nSmolLM2-135M-Instruct, {args.test} held-out arithmetic problems, greedy; LoRA on the core, "
          f"{args.train} training problems")
    print("| model | accuracy | format | last number (diagnostic) | training minutes |\n|---|---|---|---|---|")
    for stage, s in scores.items():
        cells = [f"{100 * s[key]:.1f}%" for key in ("accuracy", "format_rate", "last_number")]
        print("| " + " | ".join([stage, *cells, f"{stages[stage][1]:.1f}"]) + " |")


if __name__ == "__main__":
    main()
