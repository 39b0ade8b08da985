"""Choose the digits task's alignment stage without touching the reported speakers (theo, lucas) or the test
images: hold out a selection speaker (george by default) and a block of the training images, align on the rest
with `configs/digits_contrastive.yaml`, and probe the aligned encoders on what the stage never saw:

    .venv/bin/python benchmarks/alignment_selection.py [--speaker george] [--unseen-images 0 250] [--steps 1600]
        [--seed 0] [--config configs/digits_contrastive.yaml] [--out runs/alignment_selection]

1. `mmr1 data digits --test-speaker SPEAKER` writes the task (OUT/data).
2. OUT/selection copies it: the training records whose image is one of images/FIRST.png … images/LAST.png go
   to its val.jsonl, the rest to its train.jsonl; its test.jsonl is the held-out speaker's (media paths
   rewritten to stay valid from the new folder).
3. `mmr1 fit --config CONFIG --trainer.max_steps STEPS --seed_everything SEED` on OUT/selection.
4. `alignment_probe.py`'s nearest class mean: the unseen images (fit on the images that were trained on) and the
   selection speaker's voice (fit on the training voices).

It prints one JSON line whose `unseen_images_probe` and `selection_voice_probe` are the two accuracies
(chance 10%). The README's choice of the 1,600-step alignment is this script with --steps 800|1600 and --seed 0|1.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from alignment_probe import nearest_mean_accuracy
from mmr1_commands import FSDD, ROOT, fit, manifests, run

from mmr1.checkpoint import load_model
from mmr1.datamodules.digits import SPEAKERS
from mmr1.datamodules.manifest import read_manifest
from mmr1.datamodules.records import RecordProcessor

MEDIA = ("image", "audio")


def moved(record: dict, source: Path, target: Path) -> dict:
    """The record with its media paths (relative to folder `source`) made relative to folder `target`."""
    return {**record, **{key: os.path.relpath(source / record[key], target) for key in MEDIA if record.get(key)}}


def image_index(record: dict, manifest: Path, line: int) -> int:
    """The index N of a record's images/NNNN.png (the `load_digits` index `mmr1 data digits` names it by)."""
    stem = Path(record.get("image") or "").stem
    if not stem.isdigit():
        raise ValueError(f"{manifest}:{line}: image: expected images/NNNN.png as `mmr1 data digits` writes, "
                         f"got {record.get('image')!r}")
    return int(stem)


def selection_folder(data: Path, out: Path, first: int, last: int) -> dict[str, int]:
    """Write the selection copy of digits folder `data` under `out` (train: images outside [first, last];
    val: images inside; test: data's test split); the records per split."""
    out.mkdir(parents=True, exist_ok=True)
    train, _ = read_manifest(data / "train.jsonl", "sft")
    test, _ = read_manifest(data / "test.jsonl", "sft")
    unseen = [first <= image_index(record, data / "train.jsonl", line) <= last for line, record in train]
    splits = {"train": [r for (_, r), u in zip(train, unseen) if not u],
              "val": [r for (_, r), u in zip(train, unseen) if u],
              "test": [r for _, r in test]}
    for split, records in splits.items():
        if not records:
            raise ValueError(f"--unseen-images {first} {last}: leaves the selection {split} split of "
                             f"{data / 'train.jsonl'} empty")
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(moved(record, data, out)) + "\n" for record in records)
    return {split: len(records) for split, records in splits.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speaker", default="george", choices=SPEAKERS, help="the selection speaker, held out")
    parser.add_argument("--unseen-images", type=int, nargs=2, default=[0, 250], metavar=("FIRST", "LAST"),
                        help="training images FIRST..LAST (inclusive) are kept out of the alignment")
    parser.add_argument("--steps", type=int, default=None, help="alignment steps (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="configs/digits_contrastive.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "alignment_selection")
    parser.add_argument("--fsdd", type=Path, default=FSDD)
    parser.add_argument("--train", type=int, default=6000, help="training records before the images are split")
    parser.add_argument("--test", type=int, default=500, help="records of the selection speaker")
    parser.add_argument("--val-every", type=int, default=None, help="validation interval (default: the config's)")
    args = parser.parse_args(argv)
    first, last = args.unseen_images
    if not 0 <= first <= last:
        parser.error(f"--unseen-images: expected 0 <= FIRST <= LAST, got {first} {last}")

    data, selection = args.out / "data", args.out / "selection"
    run(["data", "digits", "--out", str(data), "--fsdd", str(args.fsdd), "--test-speaker", args.speaker,
         "--train", str(args.train), "--test", str(args.test)])
    sizes = selection_folder(data, selection, first, last)
    print(f"selection folder {selection}: {json.dumps(sizes)} records", flush=True)
    steps = "config" if args.steps is None else args.steps
    aligned, minutes = fit(args.config, args.out / f"align_steps{steps}_seed{args.seed}", manifests(selection)
                           + ["--seed_everything", str(args.seed)], args.steps, None, args.val_every)
    model, _ = load_model(aligned)
    model.eval()
    processor = RecordProcessor.from_config(model.config)
    print(json.dumps({
        "speaker": args.speaker, "unseen_images": args.unseen_images, "steps": steps, "seed": args.seed,
        "unseen_images_probe": round(nearest_mean_accuracy(model, processor, selection, "image", "val"), 4),
        "selection_voice_probe": round(nearest_mean_accuracy(model, processor, selection, "audio", "test"), 4),
        "minutes": round(minutes, 1)}))


if __name__ == "__main__":
    main()
