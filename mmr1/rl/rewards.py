"""Rule rewards for reasoning RL, each a small pure function `(completion, answer, **record) -> float`.

Built in: `accuracy`, `format`, `language`, `reasoning`. Users add their own by import path in the
YAML (`rewards: {accuracy: 1.0, "my_pkg.rewards:length_penalty": 0.1}`).
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from typing import Callable, Mapping, Optional

from mmr1 import metrics
from mmr1.datamodules.prompt import parse_response

RewardFn = Callable[..., float]

def format_reward(completion: str, answer: Optional[str] = None, **record) -> float:
    """1 for exactly one non-empty <think>…</think> then exactly one <answer>…</answer> and nothing after;
    else 0 (an empty `<think></think>` is no reasoning)."""
    return float(metrics.well_formed(completion))


def accuracy_reward(completion: str, answer: Optional[str] = None, **record) -> float:
    """1 when the one well-formed <answer> equals the reference (numbers as numbers); else 0.

    Several answers, hedges ("3 or 4"), an empty answer or a malformed response get nothing."""
    if answer is None:
        raise ValueError("answer: the accuracy reward needs a reference answer in every record")
    return float(metrics.correct(completion, answer))


def reasoning_reward(completion: str, answer: Optional[str] = None, reasoning: Optional[str] = None,
                     **record) -> float:
    """ROUGE-L F-measure of the response's <think> text against the record's reference reasoning: a
    perception reward (as Perception-R1 and Visual-RFT score what a model says it sees against the ground
    truth) that tells apart responses whose final answers are equally right or wrong, e.g. "I see a red
    circle" from "I see a red square"; a malformed response gets 0."""
    if not reasoning:
        raise ValueError("reasoning: the reasoning reward needs a reference reasoning in every record")
    thought, _ = parse_response(completion)
    if not metrics.well_formed(completion) or not thought:
        return 0.0
    return metrics.rouge_l([thought], [[reasoning]])


def reward_records(batch: dict, repeat: int = 1) -> list[dict]:
    """The reference fields rewards read (`answer`, and `reasoning` where the batch has it) of each prompt
    in a batch, each repeated `repeat` times (once per sampled response, prompt-major)."""
    fields = {"answer": batch["answers"], **({"reasoning": batch["reasonings"]} if "reasonings" in batch else {})}
    rows = [dict(zip(fields, values)) for values in zip(*fields.values())]
    return [row for row in rows for _ in range(repeat)]


SCRIPTS = {"latin": ("LATIN",), "cyrillic": ("CYRILLIC",), "greek": ("GREEK",), "arabic": ("ARABIC",),
           "cjk": ("CJK", "HIRAGANA", "KATAKANA", "HANGUL")}  # script -> Unicode character-name prefixes


def language_reward(completion: str, answer: Optional[str] = None, script: str = "latin", **record) -> float:
    """Share of the reasoning's letters written in the target script (DeepSeek-R1's language-consistency
    reward), counted in characters so unspaced CJK text scores like spaced text; digits, punctuation and
    spaces do not count; a malformed response or one without letters -> 0."""
    if script not in SCRIPTS:
        raise ValueError(f"script: expected one of {sorted(SCRIPTS)}, got {script!r}")
    reasoning, _ = parse_response(completion)
    letters = [c for c in reasoning or "" if c.isalpha()]
    if not letters:
        return 0.0
    prefixes = SCRIPTS[script]
    return sum(unicodedata.name(c, "").startswith(prefixes) for c in letters) / len(letters)


BUILTIN: dict[str, RewardFn] = {"accuracy": accuracy_reward, "format": format_reward, "language": language_reward,
                                "reasoning": reasoning_reward}


def resolve(name: str) -> RewardFn:
    """A built-in reward by name, or a user function by import path `pkg.module:function` or `pkg.module.function`."""
    if name in BUILTIN:
        return BUILTIN[name]
    module_name, _, attr = name.partition(":") if ":" in name else name.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"reward {name!r}: expected one of {sorted(BUILTIN)} or an import path 'pkg.module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"reward {name!r}: cannot import it ({e})") from e
    if not callable(fn):
        raise ValueError(f"reward {name!r}: {type(fn).__name__} is not callable")
    return fn


class Rewards:
    """A weighted sum of reward functions; also returns each term for logging."""

    def __init__(self, weights: Mapping[str, float]):
        if not weights:
            raise ValueError("rewards: give at least one reward, e.g. {'accuracy': 1.0, 'format': 0.5}")
        self.weights = dict(weights)
        self.fns = {name: resolve(name) for name in self.weights}

    def __call__(self, completions: list[str], records: list[dict]) -> tuple[list[float], dict[str, list[float]]]:
        terms = {name: [float(fn(c, **r)) for c, r in zip(completions, records)] for name, fn in self.fns.items()}
        total = [sum(self.weights[name] * terms[name][i] for name in terms) for i in range(len(completions))]
        return total, terms
