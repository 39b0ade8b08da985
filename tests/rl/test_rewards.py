"""Rule rewards, including the reward hacks public GRPO projects have seen."""

import pytest

from mmr1.rl.rewards import Rewards, accuracy_reward, format_reward, language_reward, resolve


def r(reasoning: str, answer: str) -> str:
    return f"<think>{reasoning}</think><answer>{answer}</answer>"


@pytest.mark.parametrize("completion, reference, expected", [
    (r("3 + 2 = 5", "5"), "5", 1.0),
    (r("", "5.0"), "5", 1.0),  # numbers as numbers
    (r("", "1,234"), "1234", 1.0),
    (r("", "$18"), "18", 1.0),
    (r("", "-3"), "-3", 1.0),
    (r("", "0.5"), ".5", 1.0),
    (r("", " Red. "), "red", 1.0),  # strings normalised
    (r("", "4"), "5", 0.0),
    (r("", ""), "5", 0.0),  # empty answer
    (r("", "4 or 5 or 6"), "5", 0.0),  # hedging
    (r("", "4, 5"), "5", 0.0),
    (r("", "5") + "<answer>5</answer>", "5", 0.0),  # several answers
    ("<answer>5</answer>", "5", 0.0),  # no reasoning block
    ("The answer is 5", "5", 0.0),
    (r("", "5") + " trailing", "5", 0.0),
])
def test_accuracy(completion, reference, expected):
    assert accuracy_reward(completion, reference) == expected


@pytest.mark.parametrize("completion, expected", [
    (r("think", "5"), 1.0),
    ("  " + r("a\nb", "5") + "</s>", 1.0),
    (r("a", "5") + r("b", "6"), 0.0),
    ("<think>a<think>b</think></think><answer>5</answer>", 0.0),
    ("<answer>5</answer><think>a</think>", 0.0),
    (r("a", "5") + " more", 0.0),
    ("<think>a</think>", 0.0),
])
def test_format(completion, expected):
    assert format_reward(completion) == expected


def test_language_consistency():
    assert language_reward(r("I count 3 red shapes", "3")) == 1.0
    assert language_reward(r("I count три shapes", "3")) == pytest.approx(3 / 4)
    assert language_reward(r("считаю три", "3"), script="cyrillic") == 1.0
    assert language_reward(r("42", "42")) == 0.0  # no words at all
    assert language_reward("no tags") == 0.0
    with pytest.raises(ValueError, match="script"):
        language_reward(r("a", "b"), script="klingon")


def test_weighted_sum_and_user_rewards_by_import_path():
    rewards = Rewards({"accuracy": 1.0, "format": 0.5, "tests.rl.user_reward:short_reasoning": 2.0})
    total, terms = rewards([r("ok", "5"), "5"], [{"answer": "5"}, {"answer": "5"}])
    assert terms == {"accuracy": [1.0, 0.0], "format": [1.0, 0.0], "tests.rl.user_reward:short_reasoning": [1.0, 0.0]}
    assert total == [1.0 + 0.5 + 2.0, 0.0]
    with pytest.raises(ValueError, match="cannot import"):
        resolve("tests.rl.user_reward:missing")
    with pytest.raises(ValueError, match="needs a reference answer"):
        accuracy_reward(r("a", "5"), None)
