"""The answer format, in one place: the chat format shared by training and inference, and the one
rule that reads a response (eval, the pipeline, RL rewards, rejection sampling and the demo alike).

prompt   = "<s>" + "<image>"? + "<audio>"? + question + INSTRUCTION
response = "<think>" + reasoning + "</think><answer>" + answer + "</answer></s>"

With a tokenizer that has a chat template (an imported pretrained chat model), the
prompt is that template's user turn holding the same text, the assistant's turn
opened, and the response ends with the tokenizer's eos instead of "</s>".
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable, Optional

if TYPE_CHECKING:
    from mmr1.datamodules.tokenizer import Tokenizer

INSTRUCTION = " Think step by step."
MARKERS = {"image": "<image>", "audio": "<audio>"}  # in this order, one per present modality

_TAGS = r"</?think>|</?answer>"
_WELL_FORMED = re.compile(
    rf"\s*<think>((?:(?!{_TAGS}).)*)</think>\s*<answer>((?:(?!{_TAGS}).)*)</answer>\s*(?:</s>)?\s*", re.DOTALL
)


def format_prompt(question: str, modalities: Iterable[str] = (), tokenizer: Optional["Tokenizer"] = None) -> str:
    """The core's input before the response; `modalities` names the present media; a
    `tokenizer` with a chat template wraps it in the template's user turn."""
    present = set(modalities)
    unknown = present - set(MARKERS) - {"text"}
    if unknown:
        raise ValueError(f"modalities: unknown {sorted(unknown)}; expected some of {sorted(MARKERS)}")
    markers = "".join(marker for name, marker in MARKERS.items() if name in present)
    content = f"{markers}{question.strip()}{INSTRUCTION}"
    if tokenizer is not None and tokenizer.chat_template is not None:
        return tokenizer.chat_prompt(content)
    return f"<s>{content}"


def format_response(reasoning: Optional[str], answer: str, eos: str = "</s>") -> str:
    """What the model learns to generate: reasoning in <think>, the answer in <answer>, then `eos`."""
    return f"<think>{(reasoning or '').strip()}</think><answer>{answer.strip()}</answer>{eos}"


def parse_response(text: str) -> tuple[Optional[str], Optional[str]]:
    """(reasoning, answer), stripped, when the text is exactly one <think>…</think> then one <answer>…</answer>
    (whitespace and a final </s> allowed); (None, None) for anything else: a missing, repeated or stray tag,
    or text after the answer."""
    match = _WELL_FORMED.fullmatch(text)
    return (match.group(1).strip(), match.group(2).strip()) if match else (None, None)
