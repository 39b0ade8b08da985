"""The one chat format shared by training and inference.

prompt   = "<s>" + "<image>"? + "<audio>"? + question + INSTRUCTION
response = "<think>" + reasoning + "</think><answer>" + answer + "</answer></s>"
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

INSTRUCTION = " Think step by step."
MARKERS = {"image": "<image>", "audio": "<audio>"}  # in this order, one per present modality

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def format_prompt(question: str, modalities: Iterable[str] = ()) -> str:
    """The core's input before the response; `modalities` names the present media."""
    present = set(modalities)
    unknown = present - set(MARKERS) - {"text"}
    if unknown:
        raise ValueError(f"modalities: unknown {sorted(unknown)}; expected some of {sorted(MARKERS)}")
    markers = "".join(marker for name, marker in MARKERS.items() if name in present)
    return f"<s>{markers}{question.strip()}{INSTRUCTION}"


def format_response(reasoning: Optional[str], answer: str) -> str:
    """What the model learns to generate: reasoning in <think>, the answer in <answer>, then </s>."""
    return f"<think>{(reasoning or '').strip()}</think><answer>{answer.strip()}</answer></s>"


def parse_response(text: str) -> tuple[Optional[str], Optional[str]]:
    """(reasoning, answer) from generated text, each None when its tags are missing."""
    think = _THINK.search(text)
    answer = _ANSWER.search(text)
    return (think.group(1).strip() if think else None, answer.group(1).strip() if answer else None)
