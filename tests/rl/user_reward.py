"""A user-defined reward, registered by import path in a test."""

import re


def short_reasoning(completion: str, answer=None, **record) -> float:
    match = re.search(r"<think>(.*?)</think>", completion, re.DOTALL)
    return 1.0 if match and len(match.group(1).split()) <= 5 else 0.0
