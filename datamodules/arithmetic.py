"""Grade-school arithmetic as text reasoning records: "What is 47 + 38?" → "47 + 30 = 77. 77 + 8 = 85." → "85".

A CPU-sized task on which a small pretrained chat model (SmolLM2-135M) has partial skill, so that SFT teaches it
the answer format and GRPO has right and wrong samples to learn from. The reasoning works by place value, as a
pupil does: add or subtract the tens, then the units; multiply the tens and the units by the one-digit factor,
then add. Problems are two-digit a ± two-digit b, and two-digit a × one-digit b.

Each split is a set of distinct problems (a, op, b); no problem appears in two splits. The draw is a pure
function of the seed: the test problems are drawn first, then the others, so growing `train` never changes test.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OPS = ("+", "-", "*")
OP_NAMES = {"+": "plus", "-": "minus", "*": "times"}  # in record ids
SPLITS = ("test", "val", "train")  # drawn in this order
AVAILABLE = {"+": 90 * 90, "-": 90 * 90, "*": 90 * 8}  # distinct problems of each op


def solve(a: int, op: str, b: int) -> int:
    if op not in OPS:
        raise ValueError(f"op: expected one of {OPS}, got {op!r}")
    return a + b if op == "+" else a - b if op == "-" else a * b


def reasoning(a: int, op: str, b: int) -> str:
    """The place-value steps that end in the result: 47 * 6 -> "40 * 6 = 240. 7 * 6 = 42. 240 + 42 = 282."."""
    if op == "*":
        tens, units = a // 10 * 10, a % 10
        return f"{tens} * {b} = {tens * b}. {units} * {b} = {units * b}. {tens * b} + {units * b} = {a * b}."
    tens, units = b // 10 * 10, b % 10
    partial = solve(a, op, tens)
    return f"{a} {op} {tens} = {partial}. {partial} {op} {units} = {solve(a, op, b)}."


def record(a: int, op: str, b: int, split: str) -> dict:
    """An mmr1 text record: `{id, question, reasoning, answer}`."""
    return {"id": f"arith-{split}-{a}{OP_NAMES[op]}{b}",
            "question": f"What is {a} {op} {b}?", "reasoning": reasoning(a, op, b), "answer": str(solve(a, op, b))}


def problems(sizes: dict[str, int], seed: int = 0) -> dict[str, list[tuple[int, str, int]]]:
    """Distinct problems per split, e.g. {"train": 1000, "val": 200, "test": 200}; ops in equal thirds."""
    unknown = sorted(set(sizes) - set(SPLITS))
    if unknown:
        raise ValueError(f"sizes: unknown split(s) {unknown}; expected some of {list(SPLITS)}")
    if any(n < 0 for n in sizes.values()):
        raise ValueError(f"sizes: expected counts >= 0, got {sizes}")
    for i, op in enumerate(OPS):  # each split draws its ops in turn: +, -, *, +, ...
        asked = sum(len(range(i, n, len(OPS))) for n in sizes.values())
        if asked > AVAILABLE[op]:
            raise ValueError(f"sizes: {asked} problems with {op!r} asked for, only {AVAILABLE[op]} distinct ones exist")
    rng, seen, out = random.Random(seed), set(), {}
    for split in SPLITS:
        drawn = []
        while len(drawn) < sizes.get(split, 0):
            op = OPS[len(drawn) % len(OPS)]
            problem = (rng.randint(10, 99), op, rng.randint(2, 9) if op == "*" else rng.randint(10, 99))
            if problem not in seen:
                seen.add(problem)
                drawn.append(problem)
        rng.shuffle(drawn)
        out[split] = drawn
    return {split: out[split] for split in sizes}


def write(out: str | Path, sizes: dict[str, int], seed: int = 0) -> dict[str, Path]:
    """`out/{split}.jsonl` for each split of `sizes`; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, drawn in problems(sizes, seed).items():
        paths[split] = out / f"{split}.jsonl"
        with paths[split].open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(record(a, op, b, split)) + "\n" for a, op, b in drawn)
    return paths
