"""Every metric against a value computed by hand on a small fixed example (the working is in the comments)."""

import math
from fractions import Fraction

import pytest
import torch

from mmr1.config import Config
from mmr1.datamodules.collate import Collator
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.metrics import (answer_key, answers_match, bleu, cider, exact_match, majority_answer, parse_number, pass_at_k,
                          perplexity, rouge_l, token_f1)
from mmr1.model import MultimodalModel


@pytest.mark.parametrize("pred, ref, expected", [
    ("3", "3", True), ("3.0", "3", True), (" 3. ", "3", True), ("1,000", "1000", True), ("3/4", "0.75", True),
    ("-2", "-2.0", True), ("4", "3", False), ("three", "3", False), ("Red.", "red", True),
    ("blue circle", "Blue  circle", True), (None, "3", False), ("", "3", False),
    ("6/8", "3/4", True), ("12,345,678", "12345678", True), ("$1,000.50", "1000.5", True), ("\u22125", "-5", True),
    # reward hacks: punctuation is not deleted, a number never matches a non-number, numbers are exact
    ("5%", "-5", False), ("(5)", "-5", False), ("-5", "5%", False), ("3.5%", "35", False), ("1,2,3", "123", False),
    ("12,34", "1234", False), ("1 2", "12", False), ("A/B", "AB", False), ("a-b", "ab", False),
    ("1234568", "1234567", False), ("0.30000001", "0.3", False), ("5", "five", False), ("5 apples", "5", False),
])
def test_answers_match(pred, ref, expected):
    assert answers_match(pred, ref) is expected


def test_answer_key_is_what_answers_match_compares():
    assert answer_key("6/2") == answer_key("3.0") == 3 and answer_key(" Red. ") == answer_key("red") == "red"
    assert answer_key("5%") != answer_key("5")


def respond(answer: str) -> str:
    return f"<think>so</think><answer>{answer}</answer>"


def test_majority_answer_votes_by_value_and_breaks_ties_by_first_given():
    # "3", "3.0" and "6/2" are one answer (3 votes) against "4" (2 votes); the first spelling stands for them
    assert majority_answer([respond("4"), respond("3.0"), respond("4"), respond("3"), respond("6/2")]) == "3.0"
    assert majority_answer([respond("7"), respond("5"), respond("5"), respond("7")]) == "7"  # 2 against 2: the first
    # responses without an answer cast no vote: 2 malformed, 1 empty answer, then "9" once
    assert majority_answer(["7", "<answer>7", respond(""), respond("9")]) == "9"
    assert majority_answer(["no answer", respond("")]) is None and majority_answer([]) is None


def test_parse_number_rejects_non_numbers_and_keeps_exact_values():
    for text in ("1,00", ".", "3/0", "a3", "1e5", "5%", "(5)", "1,2,3", "12,34", "1 2", "$", "-", ""):
        assert parse_number(text) is None, text
    assert parse_number("-.5") == Fraction(-1, 2) and parse_number("7.") == 7 and parse_number("2/6") == Fraction(1, 3)
    assert parse_number("9007199254740993") == 9007199254740993  # beyond float precision, still exact


def test_exact_match_has_no_number_semantics():
    assert exact_match("The cat!", "the cat") and not exact_match("3.0", "3") and not exact_match(None, "3")


def test_token_f1():
    # pred {the, cat, sat}, ref {a, cat, sat, down}: 2 common; P = 2/3, R = 2/4, F1 = 2PR/(P+R) = 4/7
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(4 / 7)
    assert token_f1("dog", "cat") == 0.0 and token_f1("", "") == 1.0


def test_bleu():
    # pred "the cat sat on the mat" vs ref "the cat sat on a mat" (both 6 tokens, brevity penalty 1):
    # clipped n-gram precisions 1: 5/6 (second "the" unmatched), 2: 3/5, 3: 2/4, 4: 1/3
    # BLEU = (5/6 · 3/5 · 1/2 · 1/3) ** (1/4) = (1/12) ** 0.25
    assert bleu(["the cat sat on the mat"], [["the cat sat on a mat"]]) == pytest.approx((1 / 12) ** 0.25, abs=1e-6)


def test_rouge_l():
    # LCS("the cat sat on the mat", "the cat sat on a mat") = "the cat sat on mat" = 5 tokens;
    # P = R = 5/6, F = 5/6. The best of two references counts.
    score = rouge_l(["the cat sat on the mat"], [["the cat sat on a mat", "dogs bark"]])
    assert score == pytest.approx(5 / 6, abs=1e-6)


def test_cider_d():
    # Two items, N = 2, so idf = ln 2 - ln df, and every reference n-gram has df = 1 → weight ln 2.
    # Item A: "a cat" vs ["a cat"]: unigram cosine 1, bigram cosine 1, 3/4-grams 0, equal lengths:
    #   mean over n = (1 + 1 + 0 + 0) / 4 = 0.5, ×10 → 5.0
    # Item B: "a dog" vs ["the dog"]: unigrams share "dog": (ln2·ln2) / (√2 ln2 · √2 ln2) = 0.5
    #   ("a" has df 1 from item A, but is absent from B's reference), bigrams 0:
    #   (0.5 + 0 + 0 + 0) / 4 = 0.125, ×10 → 1.25
    # Corpus CIDEr-D = (5.0 + 1.25) / 2 = 3.125
    assert cider(["a cat", "a dog"], [["a cat"], ["the dog"]]) == pytest.approx(3.125)


def test_cider_length_penalty_and_single_item():
    # With one item idf = ln 1 - ln 1 = 0 everywhere, so the score is 0 (as in pycocoevalcap).
    assert cider(["a cat"], [["a cat"]]) == 0.0
    # Item A now "a cat cat" (3 tokens vs 2): penalty exp(-1/72) on every n; unigram vector
    # hyp (a: ln2, cat: 2 ln2), ref (a: ln2, cat: ln2): clipped dot = 2 ln2², norms √5 ln2 · √2 ln2
    # → 2/√10; bigram "a cat" and "cat cat" vs "a cat": dot ln2², norms √2 ln2 · ln2 → 1/√2
    expected_a = 10 * math.exp(-1 / 72) * (2 / math.sqrt(10) + 1 / math.sqrt(2)) / 4
    assert cider(["a cat cat", "a dog"], [["a cat"], ["the dog"]]) == pytest.approx((expected_a + 1.25) / 2)


def test_pass_at_k():
    # n = 5 samples, c = 2 correct, k = 2: 1 - C(3, 2) / C(5, 2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 3, 3) == 1.0  # n - c < k: always a correct one
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)


def test_perplexity_of_uniform_logits_is_the_vocabulary_size():
    # Zeroing the (tied) LM head makes every logit 0: p = 1/V for each response token, so
    # perplexity = exp(-mean log(1/V)) = V = 512.
    torch.manual_seed(0)
    model = MultimodalModel(Config.from_name("tiny")).eval()
    torch.nn.init.zeros_(model.core.lm_head.weight)
    collate = Collator(Tokenizer.default(), "sft")
    examples = [{"question": q, "reasoning": r, "answer": a, "pixel_values": None, "audio_values": None}
                for q, r, a in (("How many?", "one and two", "3"), ("Colour?", "it is red", "red"))]
    assert perplexity(model, [collate(examples)]) == pytest.approx(512, rel=1e-4)


def test_accuracy_and_format_rate_read_responses_by_the_one_strict_rule():
    from mmr1.metrics import accuracy, correct, format_rate
    from mmr1.rl.rewards import accuracy_reward, format_reward

    responses = ["<think>2 + 1</think><answer>3.0</answer></s>",  # right, numbers by value
                 "<answer>3</answer>",  # right answer, malformed: no answer at all
                 "<think></think><answer>3</answer>",  # right, but no reasoning: not well-formed
                 "<think>2 + 2</think><answer>4</answer>"]  # wrong
    assert [correct(r, "3") for r in responses] == [True, False, True, False]
    assert accuracy(responses, ["3"] * 4) == 0.5 and format_rate(responses) == 0.5
    assert [accuracy_reward(r, "3") for r in responses] == [1.0, 0.0, 1.0, 0.0]  # GRPO's reward: the same rule
    assert [format_reward(r) for r in responses] == [1.0, 0.0, 0.0, 1.0]
    assert accuracy([], []) == 0.0
