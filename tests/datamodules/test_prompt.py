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
    assert parse_response(format_prompt("Q?") + text) == (reasoning, answer)


def test_parse_missing_tags():
    assert parse_response("no tags at all") == (None, None)
    assert parse_response("<think>half") == (None, None)
    assert parse_response("<answer> 7 </answer>") == (None, "7")
    assert format_response(None, "7") == "<think></think><answer>7</answer></s>"
