"""Rule rewards, including the reward hacks public GRPO projects have seen."""

import pytest

from mmr1.rl.rewards import (Rewards, accuracy_reward, format_reward, language_reward, reasoning_reward, resolve,
                             reward_records)


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
    (r("", "5%"), "-5", 0.0),  # punctuation is not deleted to make a match
    (r("", "(5)"), "-5", 0.0),
    (r("", "3.5%"), "35", 0.0),
    (r("", "1,2,3"), "123", 0.0),
    (r("", "A/B"), "AB", 0.0),
    (r("", "1234568"), "1234567", 0.0),  # numbers are exact, no relative tolerance
    (r("", "-5"), "5%", 0.0),  # a number never matches a non-number
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
    ("<think>a<think>b</think><answer>3</answer>", 0.0),
    ("so " + r("a", "3"), 0.0),
    (r("", "5"), 0.0),  # an empty <think></think> is no reasoning
    (r(" \n ", "5"), 0.0),
])
def test_format(completion, expected):
    assert format_reward(completion) == expected


def test_language_consistency_counts_letters_of_the_target_script():
    assert language_reward(r("I count 3 red shapes", "3")) == 1.0
    assert language_reward(r("I count три shapes", "3")) == pytest.approx(12 / 15)  # I+count+shapes vs три
    assert language_reward(r("считаю три", "3"), script="cyrillic") == 1.0
    # unspaced CJK text is scored by its characters, not as one long "word" spoiled by one Latin letter
    assert language_reward(r("我数了3个形状，所以是3。", "3"), script="cjk") == 1.0
    assert language_reward(r("我数了3个red形状", "3"), script="cjk") == pytest.approx(6 / 9)
    assert language_reward(r("図形を3つ数えた", "3"), script="cjk") == 1.0  # kanji and kana
    assert language_reward(r("I count 三个 shapes", "3")) == pytest.approx(12 / 14)
    assert language_reward(r("42", "42")) == 0.0  # no letters at all
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


def test_reasoning_reward_scores_what_the_response_says_it_perceives_against_the_record():
    truth = "I see a red circle and a blue square (1 square). 1 square."
    assert reasoning_reward(r(truth, "1"), "1", reasoning=truth) == pytest.approx(1.0)
    misread = reasoning_reward(r(truth.replace("circle", "triangle"), "1"), "1", reasoning=truth)
    assert 0.8 < misread < 1.0  # one word of twelve wrong: the answer reward cannot tell these apart
    assert reasoning_reward(r("I guess.", "1"), "1", reasoning=truth) < misread
    assert reasoning_reward(f"<think>{truth}</think>", "1", reasoning=truth) == 0.0  # malformed
    assert reasoning_reward(r("", "1"), "1", reasoning=truth) == 0.0  # no reasoning
    with pytest.raises(ValueError, match="reasoning: the reasoning reward needs a reference reasoning"):
        reasoning_reward(r(truth, "1"), "1")
    assert Rewards({"reasoning": 1.0}).fns["reasoning"] is reasoning_reward


def test_reward_records_repeat_each_prompt_s_references_once_per_response():
    batch = {"answers": ["1", "2"], "reasonings": ["a", "b"]}
    assert reward_records(batch, 2) == [{"answer": "1", "reasoning": "a"}] * 2 + [{"answer": "2", "reasoning": "b"}] * 2
    assert reward_records({"answers": ["1"]}) == [{"answer": "1"}]
