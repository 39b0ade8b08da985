"""The real-data digits task on a real pretrained core: SmolLM2-135M-Instruct, imported offline, reads a handwritten
digit (scikit-learn) and a spoken digit (FSDD, one speaker held out) through mmr1's encoders and fusion (the LLaVA
recipe: align the projector, then tune). Everything runs through `mmr1` commands and shipped configs, as a user
would type them (each command is printed):

    mmr1 data digits --out OUT/data --fsdd ../shared/data/fsdd --test-speaker theo
    mmr1 fit --config configs/digits_contrastive.yaml ...        perception alignment of the encoders (tiny preset)
    mmr1 import --gguf --out OUT/smollm2
    mmr1 init --preset tiny --overrides '{"vision": {"stem": "conv"}, "fusion": {"resampler_tokens": 0,
        "vocab_prefix": true}, "text": null}' --core OUT/smollm2 --encoders <contrastive export> --out OUT/init
    mmr1 fit --config configs/digits_prefix_words.yaml ...       the prefix learns each medium's caption word
    mmr1 fit --config configs/smollm2_digits_sft.yaml ...        cold-start SFT: LoRA on the core, fusion frozen
    mmr1 fit --config benchmarks/configs/smollm2_digits_grpo.yaml ...   GRPO (LoRA), with --grpo-steps N
    mmr1 eval --checkpoint <export> --manifest OUT/data/test.jsonl ...

Prints, for the held-out speaker, the measures of `real_digits.py` (exact answers, the pictured and the spoken
digit the model writes, format, minutes of training). The stages' settings were chosen on the val split (training
speakers' held-out takes, held-out images), never on the reported speaker's test records.

    .venv/bin/python benchmarks/smollm2_digits.py --speaker theo [--out runs/smollm2_digits]
        [--encoders E]      a digits_contrastive.yaml export made for the same speaker instead of training one
        [--withhold]        also score with the image, then the audio, withheld (two more evaluations)
        [--grpo-steps N]    then N steps of GRPO from the SFT export (benchmarks/configs/smollm2_digits_grpo.yaml;
                            0, the default, skips it)
        [--gguf FILE | --hf FOLDER]     another Llama/Qwen2 chat model instead of the packaged SmolLM2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmr1_commands import FSDD, ROOT, fit, manifests, run, tokenized
from real_digits import score, table_row

from mmr1.datamodules.digits import SPEAKERS

OVERRIDES = {"vision": {"stem": "conv"}, "fusion": {"resampler_tokens": 0, "vocab_prefix": True}, "text": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speaker", default="theo", choices=SPEAKERS, help="the speaker held out for test")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "smollm2_digits")
    parser.add_argument("--train", type=int, default=6000, help="training records")
    parser.add_argument("--test", type=int, default=500, help="test records (all of the held-out speaker)")
    parser.add_argument("--fsdd", type=Path, default=FSDD)
    parser.add_argument("--encoders", type=Path, default=None, help="a digits_contrastive.yaml export for this speaker")
    parser.add_argument("--contrastive-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--prefix-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--sft-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--val-every", type=int, default=None, help="validation interval (default: the configs')")
    parser.add_argument("--withhold", action="store_true", help="also score without the image, without the audio")
    parser.add_argument("--grpo-steps", type=int, default=0, help="GRPO steps after SFT (0 skips GRPO)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--gguf", type=Path, default=None, help="a GGUF file (default: the packaged SmolLM2)")
    source.add_argument("--hf", type=Path, default=None, help="a Hugging Face Llama/Qwen2 folder instead")
    args = parser.parse_args()

    out = args.out / args.speaker
    data, imported, init = out / "data", args.out / "smollm2", out / "init"
    run(["data", "digits", "--out", str(data), "--fsdd", str(args.fsdd), "--test-speaker", args.speaker,
         "--train", str(args.train), "--test", str(args.test)])
    minutes = 0.0
    aligned = str(args.encoders) if args.encoders else None
    if aligned is None:
        aligned, minutes = fit("configs/digits_contrastive.yaml", out / "contrastive", manifests(data),
                               args.contrastive_steps, None, args.val_every)
    if not (imported / "config.json").is_file():
        origin = ["--hf", str(args.hf)] if args.hf else ["--gguf", *([str(args.gguf)] if args.gguf else [])]
        run(["import", *origin, "--out", str(imported)])
    run(["init", "--preset", "tiny", "--overrides", json.dumps(OVERRIDES), "--core", str(imported),
         "--encoders", aligned, "--out", str(init)])
    worded, more = fit("configs/digits_prefix_words.yaml", out / "prefix_words", tokenized(data, str(init)),
                       args.prefix_steps, str(init), args.val_every)
    minutes += more
    sft, more = fit("configs/smollm2_digits_sft.yaml", out / "sft", tokenized(data, worded), args.sft_steps, worded,
                    args.val_every)
    minutes += more
    stages = {"cold-start SFT": (sft, minutes)}
    if args.grpo_steps:
        grpo, more = fit("benchmarks/configs/smollm2_digits_grpo.yaml", out / "grpo", tokenized(data, sft),
                         args.grpo_steps, sft, args.val_every)
        stages["GRPO"] = (grpo, minutes + more)

    withheld = ("", "image", "audio") if args.withhold else ("",)
    scores = {name: score(export, data / "test.jsonl", Path(export).parent, withheld)
              for name, (export, _) in stages.items()}
    print(f"\nheld-out speaker: {args.speaker} ({args.test} test records, images never trained on); SmolLM2-135M-"
          f"Instruct core, LoRA r16{'' if args.encoders is None else '; encoders from ' + str(args.encoders)}")
    header = ("stage", "accuracy", "image digit", "spoken digit", "acc. no image", "acc. no audio", "format",
              "training minutes")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, s in scores.items():
        print(table_row(name, s, stages[name][1]), flush=True)


if __name__ == "__main__":
    main()
