"""GSM8K (grade-school maths word problems) as mmr1 manifests and as a plain-text corpus.

A GSM8K line is `{"question", "answer": "steps with <<48/2=24>> annotations\\n#### 72"}`;
the manifest record keeps the question, the steps without calculator annotations as
`reasoning`, and the text after `####` as `answer`, exactly as written ("1,000", "-3").
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Iterator

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_FINAL = "####"


def parse_solution(solution: str) -> tuple[str, str]:
    """(reasoning, answer) of a GSM8K solution: annotations stripped, the `#### answer` line split off."""
    if solution.count(_FINAL) != 1:
        raise ValueError(f"answer: expected one '{_FINAL} <final answer>' line, found {solution.count(_FINAL)}")
    steps, answer = solution.split(_FINAL)
    if not answer.strip():
        raise ValueError(f"answer: nothing after '{_FINAL}'")
    return _CALCULATOR.sub("", steps).strip(), answer.strip()


def read_gsm8k(path: str | Path, split: str | None = None) -> Iterator[dict]:
    """mmr1 records `{id, question, reasoning, answer}` of a GSM8K JSONL file; `split` defaults to the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GSM8K file not found")
    split = split or path.stem
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record.get("question"), str) or not isinstance(record.get("answer"), str):
                    raise ValueError("record: expected 'question' and 'answer' strings")
                reasoning, answer = parse_solution(record["answer"])
            except (json.JSONDecodeError, ValueError) as e:
                raise ValueError(f"{path}:{line_no}: {e}") from e
            yield {"id": f"gsm8k-{split}-{line_no}", "question": record["question"].strip(),
                   "reasoning": reasoning, "answer": answer}


def shortest(records: Iterable[dict], n: int) -> list[dict]:
    """The n records with the fewest characters of question + reasoning (ties keep file order): a CPU-sized
    slice of real problems, mostly one or two steps."""
    if n < 1:
        raise ValueError(f"shortest: expected n >= 1, got {n}")
    return sorted(records, key=lambda r: len(r["question"]) + len(r["reasoning"] or ""))[:n]


def convert(source: str | Path, out: str | Path, split: str | None = None, n_shortest: int | None = None) -> int:
    """Write the mmr1 manifest of a GSM8K file (only its `n_shortest` shortest problems, in file order, when
    given); returns the number of records."""
    records = list(read_gsm8k(source, split))  # every line checked before anything is written
    if n_shortest is not None:
        kept = {r["id"] for r in shortest(records, n_shortest)}  # ids are unique: one per line of the file
        records = [r for r in records if r["id"] in kept]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(record) + "\n" for record in records)
    return len(records)


def gsm8k_texts(path: str | Path) -> Iterator[str]:
    """Plain-text documents (question, worked solution, answer) for use as a pretraining corpus."""
    for record in read_gsm8k(path):
        yield f"{record['question']}\n{record['reasoning']}\nThe answer is {record['answer']}."
