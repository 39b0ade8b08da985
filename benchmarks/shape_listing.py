"""How well does a model list the built-in images' shapes? Scores a pipeline stage's greedy predictions
(`<out_dir>/<stage>/predictions.jsonl`) against the records they answer (`<out_dir>/eval_data/test.jsonl`),
over the records whose reference reasoning lists shapes ("I see a red circle and a blue square."):

    listed exactly   the model's listing equals the reference's (running counts included)
    count right      it lists as many shapes as the image has
    colour, kind     per shape, in order, over the records whose count is right

    .venv/bin/python benchmarks/shape_listing.py EVAL_MANIFEST PREDICTIONS [PREDICTIONS ...]

It trains nothing (README: "The recipe as shipped, on 1,000 held-out records").
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from mmr1.datamodules.synth import KINDS


SEEN = re.compile(r"I see ([^.]*)\.")
ITEM = re.compile(rf"a (\w+) ({'|'.join(KINDS)})")


def listing(reasoning: str | None) -> str | None:
    """The "I see ..." listing of a reasoning, or None."""
    found = SEEN.search(reasoning or "")
    return found.group(1) if found else None


def score(references: dict[str, str], predictions: list[dict]) -> dict[str, float]:
    """references: id -> reference reasoning; predictions: rows with id, reasoning and correct."""
    listed = exact = counted = shapes = colours = kinds = 0
    for row in predictions:
        reference = listing(references[row["id"]])
        if reference is None:
            continue
        listed += 1
        predicted = listing(row.get("reasoning"))
        exact += predicted == reference
        want, got = ITEM.findall(reference), ITEM.findall(predicted or "")
        if len(want) == len(got):
            counted += 1
            shapes += len(want)
            colours += sum(a[0] == b[0] for a, b in zip(want, got))
            kinds += sum(a[1] == b[1] for a, b in zip(want, got))
    return {"accuracy": sum(bool(r["correct"]) for r in predictions) / len(predictions),
            "records_listing_shapes": listed, "listed_exactly": exact / max(listed, 1),
            "count_right": counted / max(listed, 1), "shape_colour": colours / max(shapes, 1),
            "shape_kind": kinds / max(shapes, 1)}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path, help="the records the predictions answer (eval_data/test.jsonl)")
    parser.add_argument("predictions", type=Path, nargs="+")
    args = parser.parse_args()
    references = {r["id"]: r["reasoning"] for r in jsonl(args.manifest)}
    for path in args.predictions:
        rows = jsonl(path)
        missing = [r["id"] for r in rows if r["id"] not in references]
        if missing:
            raise SystemExit(f"{path}: {len(missing)} ids not in {args.manifest} (first {missing[0]!r})")
        print(json.dumps({"predictions": str(path), **{k: round(v, 4) for k, v in score(references, rows).items()}}))


if __name__ == "__main__":
    main()
