"""Does a digits checkpoint's core compute the task's arithmetic? For every pair of digits (a, b) and each
question kind of `mmr1 data digits`, the record's text (prompt, then the reasoning) is cut just before the
result ("... The sound says 8. 4 + 8 =", "... The larger is") and the core continues it greedily, text only,
with no image or audio. A continuation whose first number is not the result is wrong.

    .venv/bin/python benchmarks/arithmetic_probe.py EXPORT [EXPORT ...]

It prints one JSON line per checkpoint: the number of wrong results of each kind (100 pairs each) and what
was written for them. It trains nothing; the export of configs/digits_text.yaml is what it was made for (the
text stage, whose job is this arithmetic).
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Callable

import torch

from mmr1.checkpoint import load_model
from mmr1.datamodules.digits import QUESTIONS, reasoning
from mmr1.datamodules.text import render_record

_FIRST_NUMBER = re.compile(r"\s*(-?\d+)")


def prompts() -> list[tuple[str, str, str, int]]:
    """(kind, the step it asks for, the record's text cut before its result, the result) for all 100 digit
    pairs of each kind; the step is the reasoning's last sentence ("4 + 8 = 12."), "max(3, 8) = 8." for
    "The larger is 8." (which names neither digit)."""
    rows = []
    for question in QUESTIONS:
        for a in range(10):
            for b in range(10):
                result = question.answer(a, b)
                said = reasoning(a, b, question)
                text = render_record({"question": question.text, "reasoning": said, "answer": str(result)})
                # the result is the reasoning's last number: cut before it, keeping no trailing space
                cut = text.index(said) + said.rindex(str(result))
                step = f"max({a}, {b}) = {result}." if question.kind == "larger" else question.step(a, b)
                rows.append((question.kind, step, text[:cut].rstrip(), result))
    return rows


def wrong_results(continue_text: Callable[[str], str]) -> dict[str, list[str]]:
    """kind -> "step: what was written" for each prompt whose continuation does not start with its result."""
    wrong: dict[str, list[str]] = {question.kind: [] for question in QUESTIONS}
    for kind, step, text, result in prompts():
        written = continue_text(text)
        number = _FIRST_NUMBER.match(written)
        if number is None or int(number.group(1)) != result:
            wrong[kind].append(f"{step} wrote {written.strip()!r}")
    return wrong


def greedy_continuation(checkpoint: str, max_new_tokens: int = 4) -> Callable[[str], str]:
    """text -> the checkpoint core's greedy continuation of it (no media), decoded."""
    model, tokenizer = load_model(checkpoint)
    model.eval()

    @torch.no_grad()
    def continue_text(text: str) -> str:
        ids = torch.tensor([tokenizer.encode(text)])  # [1, T]
        out = model.core.generate(ids, max_new_tokens=max_new_tokens)  # [1, T + new]
        return tokenizer.decode(out[0, ids.shape[1]:].tolist())

    return continue_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders (e.g. the export of digits_text.yaml)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    for checkpoint in args.checkpoints:
        wrong = wrong_results(greedy_continuation(checkpoint))
        print(json.dumps({"checkpoint": checkpoint, "wrong_of_100": {k: len(v) for k, v in wrong.items()},
                          "wrong": wrong}), flush=True)


if __name__ == "__main__":
    main()
