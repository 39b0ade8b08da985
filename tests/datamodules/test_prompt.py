import pytest

from mmr1.datamodules.prompt import INSTRUCTION, format_prompt, format_response, parse_response


def test_prompt_has_one_marker_per_present_modality_in_fixed_order():
    assert format_prompt("Q?", ["audio", "image"]) == f"<s><image><audio>Q?{INSTRUCTION}"
    assert format_prompt("Q?", ["audio"]) == f"<s><audio>Q?{INSTRUCTION}"
    assert format_prompt(" Q? ") == f"<s>Q?{INSTRUCTION}"
    with pytest.raises(ValueError, match="video"):
        format_prompt("Q?", ["video"])


@pytest.mark.parametrize("reasoning, answer", [("I count 3. 3 + 2 = 5.", "5"), ("line one\nline two", "yes"),
                                               ("", "red")])
def test_response_round_trips(reasoning, answer):
    text = format_response(reasoning, answer)
    assert text.endswith("</answer></s>")
    assert parse_response(text) == (reasoning, answer)
    assert parse_response(f"  {text}\n") == (reasoning, answer)


@pytest.mark.parametrize("text", ["no tags at all", "<think>half", "<answer> 7 </answer>",
                                  "Q?<think>a</think><answer>7</answer>", "<think>a</think><answer>7</answer> more",
                                  "<think>a</think><answer>7</answer><answer>8</answer>"])
def test_anything_but_one_think_then_one_answer_has_no_answer(text):
    """One rule for every reader (eval's answer, EM and accuracy, rewards, sampling): strict."""
    assert parse_response(text) == (None, None)


def test_format_response_without_reasoning():
    assert format_response(None, "7") == "<think></think><answer>7</answer></s>"
