"""Does an aligned encoder tell digits apart? A nearest-class-mean probe of the pooled encoder states of a
checkpoint (e.g. the export of configs/digits_contrastive.yaml) on an `mmr1 data digits` folder:

    image digit, val images    the class means of the train images' states, each val image's nearest mean
    spoken digit, val takes    the same for the training speakers' held-out takes
    spoken digit, test speaker the same for the held-out speaker's clips (a voice never trained on)

The digit labels come from each record's reasoning ("The picture shows 7. The sound says 3. ...").
Chance is 10%. It trains nothing, so it is a cheap selection signal for the alignment stage.

    .venv/bin/python benchmarks/alignment_probe.py EXPORT DATA_FOLDER
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from mmr1.checkpoint import load_model
from mmr1.datamodules.collate import media
from mmr1.datamodules.digits import perceived_digits
from mmr1.datamodules.manifest import read_manifest
from mmr1.datamodules.records import RecordProcessor

def labelled_media(data: Path, split: str, key: str) -> list[tuple[str, int]]:
    """(media path, digit) for each distinct image ("image") or clip ("audio") of a split, in file order."""
    which = 0 if key == "image" else 1
    seen: dict[str, int] = {}
    records, _ = read_manifest(data / f"{split}.jsonl", "sft")  # a bad record raises, naming its line
    for _, record in records:
        digit = perceived_digits(record["reasoning"])[which]
        if digit is None:
            raise ValueError(f"{data / split}.jsonl: record {record['id']} names no digit in its reasoning")
        seen.setdefault(record[key], digit)
    return list(seen.items())


@torch.no_grad()
def pooled_states(model, processor: RecordProcessor, data: Path, items: list[tuple[str, int]], key: str
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm pooled encoder states [N, D] and digits [N]."""
    states = []
    for start in range(0, len(items), 64):
        examples = [processor({key: path}, data) for path, _ in items[start:start + 64]]
        encoded = model.encode(**media(examples))[key]
        states.append(torch.nn.functional.normalize(encoded.pooled, dim=-1))  # [b, D]
    return torch.cat(states), torch.tensor([digit for _, digit in items])


def nearest_mean_accuracy(model, processor, data: Path, key: str, test_split: str) -> float:
    train_x, train_y = pooled_states(model, processor, data, labelled_media(data, "train", key), key)
    missing = sorted(set(range(10)) - set(train_y.tolist()))
    if missing:
        raise ValueError(f"{data}/train.jsonl: no {key} of digit(s) {missing} to form a class mean")
    test_x, test_y = pooled_states(model, processor, data, labelled_media(data, test_split, key), key)
    return nearest_mean(train_x, train_y, test_x, test_y)


def nearest_mean(fit: torch.Tensor, fit_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor) -> float:
    """Share of test states [N, D] whose nearest (cosine) class mean of the fit states [M, D] is their own class's;
    classes are 0 .. fit_labels.max(), each with a fit state."""
    fit, test = F.normalize(fit, dim=-1), F.normalize(test, dim=-1)
    means = torch.stack([fit[fit_labels == c].mean(0) for c in range(int(fit_labels.max()) + 1)])  # [C, D]
    return ((test @ F.normalize(means, dim=-1).T).argmax(-1) == test_labels).float().mean().item()


def probe(checkpoint: str | Path, data: str | Path) -> dict[str, float]:
    """The three probe accuracies of a checkpoint with image and audio encoders on a digits folder."""
    model, _ = load_model(checkpoint)
    model.eval()
    data = Path(data)
    processor = RecordProcessor.from_config(model.config)
    return {"image_digit_val": nearest_mean_accuracy(model, processor, data, "image", "val"),
            "spoken_digit_val_takes": nearest_mean_accuracy(model, processor, data, "audio", "val"),
            "spoken_digit_test_speaker": nearest_mean_accuracy(model, processor, data, "audio", "test")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint folder with image and audio encoders")
    parser.add_argument("data", type=Path, help="an `mmr1 data digits` folder (train/val/test.jsonl)")
    args = parser.parse_args()
    print(json.dumps({k: round(v, 4) for k, v in probe(args.checkpoint, args.data).items()}))


if __name__ == "__main__":
    main()
