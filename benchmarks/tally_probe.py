"""Has a model's core learnt when to tally a listed shape? Teacher-forced on the built-in records' own text
(the chat-format prompt and reasoning, no image or audio): after each shape its reasoning lists ("a red
circle"), does the core's most likely next token say what the record does, a running count (" (", as in
"a red circle (1 red)") or not? The rule is about text alone: tally a shape when it has the colour or kind
the question filters by. Scored per question family:

    colour    "How many red shapes are in the image?", "How many red shapes plus low beeps are there?"
    kind      "How many circles are in the image?", and the other questions that name a kind
    none      questions that filter no shape (nothing is tallied)

    .venv/bin/python benchmarks/tally_probe.py MANIFEST EXPORT [EXPORT ...]

MANIFEST: built-in records (e.g. `<out_dir>/eval_data/test.jsonl` of a selection run). It trains nothing
(docs/figures_history.md: "Three releases ago: a core deep enough to tally by colour.").
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import torch

from mmr1.checkpoint import load_model
from mmr1.datamodules.synth import COLOURS, KINDS
from mmr1.datamodules.text import render_record
from shape_listing import ITEM, SEEN

COLOUR_FILTER = re.compile(rf"\b({'|'.join(COLOURS)}) shapes\b")
KIND_FILTER = re.compile(rf"\b({'|'.join(KINDS)})s\b")


def family(question: str) -> str:
    """What the reasoning tallies its listed shapes by, for this question: colour, kind, or none."""
    return "colour" if COLOUR_FILTER.search(question) else "kind" if KIND_FILTER.search(question) else "none"


def tally_points(tokenizer, text: str) -> tuple[list[int], list[tuple[int, bool]]]:
    """The token ids of `text` and, for each shape its "I see ..." listing names, (the position of the
    shape's last token, whether a running count follows it)."""
    ids = tokenizer.encode(text)
    if "I see " not in text:
        return ids, []
    found = SEEN.search(text)
    if found is None:
        raise ValueError(f"{text[text.index('I see '):][:60]!r}...: the listing does not end in '.'")
    points = []
    for item in ITEM.finditer(text, *found.span(1)):
        prefix = tokenizer.encode(text[: item.end()])
        if ids[: len(prefix)] != prefix:
            raise ValueError(f"{text[:60]!r}...: the text up to {item.group(0)!r} tokenizes differently alone")
        points.append((len(prefix) - 1, text.startswith(" (", item.end())))
    return ids, points


@torch.no_grad()
def probe(export: Path, records: list[dict]) -> dict:
    """Per family: the decisions scored, the share right, and of the counts the records write, how many the core
    would write too (`tallies_made`)."""
    model, tokenizer = load_model(export)
    model.eval()
    count_token = tokenizer.encode(" (")
    if len(count_token) != 1:
        raise ValueError(f"{export}: ' (' is {len(count_token)} tokens in this vocabulary; the probe needs one")
    counts: Counter = Counter()
    for record in records:
        ids, points = tally_points(tokenizer, render_record(record))
        if not points:
            continue
        tokens = torch.tensor([ids])  # [1, T]
        predicted = model.core(tokens, torch.ones_like(tokens)).logits[0].argmax(-1)  # [T]
        name = family(record["question"])
        for position, tallied in points:
            guess = int(predicted[position]) == count_token[0]
            counts[name, "decisions"] += 1
            counts[name, "right"] += guess == tallied
            counts[name, "tallies"] += tallied
            counts[name, "tallies_predicted"] += tallied and guess
    names = sorted({name for name, _ in counts})
    return {name: {"decisions": counts[name, "decisions"],
                   "right": round(counts[name, "right"] / counts[name, "decisions"], 4),
                   "tallies_made": f"{counts[name, 'tallies_predicted']} / {counts[name, 'tallies']}"}
            for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path, help="built-in records with question and reasoning")
    parser.add_argument("exports", type=Path, nargs="+", help="model folders (a stage's export/)")
    args = parser.parse_args()
    records = [json.loads(line) for line in args.manifest.read_text().splitlines() if line.strip()]
    missing = [i for i, r in enumerate(records) if not {"question", "reasoning", "answer"} <= r.keys()]
    if missing:
        raise SystemExit(f"{args.manifest}: line {missing[0] + 1}: expected question, reasoning and answer")
    for export in args.exports:
        print(json.dumps({"export": str(export), **probe(export, records)}))


if __name__ == "__main__":
    main()
