"""Learning figure on real data: a handwritten digit (scikit-learn) + a spoken digit (FSDD, one speaker
held out) + a question that needs both. Everything runs through `mmr1` commands and shipped configs,
exactly as a user would type them (each command is printed before it runs):

    mmr1 data digits --out OUT/data --fsdd ../shared/data/fsdd --test-speaker theo
    mmr1 fit --config configs/digits_contrastive.yaml ...   perception alignment (then alignment_probe.py)
    mmr1 fit --config configs/digits_text.yaml ...          the core learns the task's text (causal LM)
    mmr1 fit --config configs/digits_sft.yaml ...           cold-start SFT (best val/loss exported)
    mmr1 fit --config configs/digits_grpo.yaml ...          GRPO from the SFT export
    mmr1 eval --checkpoint M --manifest OUT/data/test.jsonl [--withhold image|audio] --output ...

For the held-out speaker it prints exact-answer accuracy, perception accuracy (the pictured and the
spoken digit the model writes in its reasoning, each scored), accuracy with the image or the audio
withheld, format rate, and minutes of training. Hyper-parameters were chosen on the val split (the
training speakers' held-out takes and held-out images) and on runs holding out a third speaker (george),
never on the reported test speakers (theo, lucas). Images are split by index for every speaker, so george's
test records show the same test images as theo's and lucas's: a choice made on george's image digit has seen them.

    .venv/bin/python benchmarks/real_digits.py --speaker theo [--out runs/real_digits] [--grpo-steps 0]
        [--configs DIR]      your own digits_{contrastive,text,sft,grpo}.yaml instead of the shipped ones
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alignment_probe import probe
from mmr1_commands import FSDD, ROOT, fit, manifests, run

from mmr1.datamodules.digits import SPEAKERS, perceived_digits


def texts(data: Path, tokenizer: str) -> list[str]:
    """The data arguments of the text stage: the same records as text, in the model's own vocabulary."""
    return ["--data.init_args.train_files", json.dumps([str(data / "train.jsonl")]),
            "--data.init_args.val_files", json.dumps([str(data / "val.jsonl")]),
            "--data.init_args.tokenizer", tokenizer]


def score(model: str, manifest: Path, out: Path, withhold: tuple[str, ...] = ("", "image", "audio")) -> dict:
    """mmr1 eval with every medium (""), then without the image, then without the audio (each as in `withhold`);
    perception from the reasoning."""
    references = [json.loads(line) for line in manifest.open()]
    result = {}
    for withheld in withhold:
        predictions = out / f"predictions{'_no_' + withheld if withheld else ''}.jsonl"
        args = ["eval", "--checkpoint", model, "--manifest", str(manifest), "--output", str(predictions),
                "--no-progress", "--batch-size", "32", "--max-new-tokens", "48"]
        summary = json.loads(run(args + (["--withhold", withheld] if withheld else [])).strip().splitlines()[-1])
        if withheld:
            result[f"accuracy_no_{withheld}"] = summary["accuracy"]
            continue
        rows = [json.loads(line) for line in predictions.open()]
        said = [perceived_digits(row["reasoning"]) for row in rows]
        truth = [perceived_digits(r["reasoning"]) for r in references]
        result.update(accuracy=summary["accuracy"], format_rate=summary["format_rate"],
                      image_digit=sum(s[0] == t[0] for s, t in zip(said, truth)) / len(rows),
                      spoken_digit=sum(s[1] == t[1] for s, t in zip(said, truth)) / len(rows))
    return result


def table_row(stage: str, scores: dict, minutes: float) -> str:
    """One markdown row of the figures table: `score`'s measures as percentages, "—" for those not measured."""
    cells = [f"{100 * scores[k]:.1f}%" if k in scores else "—" for k in (
        "accuracy", "image_digit", "spoken_digit", "accuracy_no_image", "accuracy_no_audio", "format_rate")]
    return "| " + " | ".join([stage, *cells, f"{minutes:.1f}"]) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speaker", default="theo", choices=SPEAKERS, help="the speaker held out for test")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "real_digits")
    parser.add_argument("--fsdd", type=Path, default=FSDD)
    parser.add_argument("--train", type=int, default=6000, help="training records")
    parser.add_argument("--test", type=int, default=500, help="test records (all of the held-out speaker)")
    parser.add_argument("--contrastive-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--text-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--sft-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--grpo-steps", type=int, default=None, help="default: the config's; 0 skips GRPO")
    parser.add_argument("--configs", type=Path, default=Path("configs"), help="the folder holding the "
                        "digits_{contrastive,text,sft,grpo}.yaml to run (default: the shipped ones)")
    parser.add_argument("--val-every", type=int, default=None, help="validation interval in steps (default: "
                        "the configs'); for short smoke runs")
    args = parser.parse_args()

    out = args.out / args.speaker
    data = out / "data"
    run(["data", "digits", "--out", str(data), "--fsdd", str(args.fsdd), "--test-speaker", args.speaker,
         "--train", str(args.train), "--test", str(args.test)])
    config = {stage: str(args.configs / f"digits_{stage}.yaml") for stage in ("contrastive", "text", "sft", "grpo")}
    aligned, minutes = fit(config["contrastive"], out / "contrastive", manifests(data), args.contrastive_steps, None,
                           args.val_every)
    print("alignment probe (nearest class mean, chance 10%): " + json.dumps(
        {k: round(v, 4) for k, v in probe(aligned, data).items()}), flush=True)
    reader, more = fit(config["text"], out / "text", texts(data, aligned), args.text_steps, aligned, args.val_every)
    minutes += more
    sft, more = fit(config["sft"], out / "sft", manifests(data), args.sft_steps, reader, args.val_every)
    minutes += more
    stages = {"cold-start SFT": (sft, minutes)}
    if args.grpo_steps != 0:
        grpo, more = fit(config["grpo"], out / "grpo", manifests(data), args.grpo_steps, sft,
                         args.val_every)
        stages["GRPO"] = (grpo, minutes + more)

    print(f"\nheld-out speaker: {args.speaker} ({args.test} test records, images never trained on)")
    header = ("stage", "accuracy", "image digit", "spoken digit", "acc. no image", "acc. no audio", "format",
              "training minutes")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for stage, (model, minutes) in stages.items():
        s = score(model, data / "test.jsonl", Path(model).parent)
        print(table_row(stage, s, minutes), flush=True)


if __name__ == "__main__":
    main()
