"""benchmarks/tally_probe.py: it finds each listed shape's last token, reads whether the record tallies it,
and scores the core's next-token decision there by question family."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import tally_probe  # noqa: E402
from mmr1.config import Config  # noqa: E402
from mmr1.datamodules.text import render_record  # noqa: E402
from mmr1.datamodules.tokenizer import Tokenizer  # noqa: E402
from mmr1.model import MultimodalModel  # noqa: E402

COLOUR = {"question": "How many red shapes plus low beeps are there?", "answer": "3",
          "reasoning": "I see a red circle (1 red), a blue square and a red triangle (2 red). I hear 1 beep: low "
                       "(1 low). 2 red, 1 low. 2 + 1 = 3."}
KIND = {"question": "How many circles are in the image?", "answer": "1",
        "reasoning": "I see a green circle (1 circle) and a yellow square. 1 shape is a circle."}
NONE = {"question": "How many beeps are in the sound?", "answer": "1",
        "reasoning": "I hear 1 beep: high. That is 1 beep."}


def test_families_and_tally_points_follow_the_record_text():
    assert [tally_probe.family(r["question"]) for r in (COLOUR, KIND, NONE)] == ["colour", "kind", "none"]
    assert tally_probe.family("How many shapes are in the image?") == "none"
    tokenizer = Tokenizer.default()
    ids, points = tally_probe.tally_points(tokenizer, render_record(COLOUR))
    assert [tallied for _, tallied in points] == [True, False, True]
    words = [tokenizer.decode([ids[p]]).strip() for p, _ in points]
    assert words == ["circle", "square", "triangle"]
    assert [tokenizer.decode([ids[p + 1]]) for p, _ in points] == [" (", " and", " ("]
    assert tally_probe.tally_points(tokenizer, render_record(NONE))[1] == []
    with pytest.raises(ValueError, match="the listing does not end in '.'"):
        tally_probe.tally_points(tokenizer, "<think>I see a red circle")


class AlwaysCount(torch.nn.Module):
    """A core whose most likely next token is always ' ('."""

    def __init__(self, token: int, vocab: int):
        super().__init__()
        self.token, self.vocab = token, vocab

    def forward(self, ids, mask):
        logits = torch.zeros(*ids.shape, self.vocab)
        logits[..., self.token] = 1.0
        return SimpleNamespace(logits=logits)


def test_a_core_that_always_tallies_is_right_exactly_where_the_records_tally(monkeypatch):
    tokenizer = Tokenizer.default()
    model = SimpleNamespace(core=AlwaysCount(tokenizer.encode(" (")[0], tokenizer.vocab_size), eval=lambda: None)
    monkeypatch.setattr(tally_probe, "load_model", lambda export: (model, tokenizer))
    figures = tally_probe.probe(Path("unused"), [COLOUR, KIND, NONE])
    assert figures == {"colour": {"decisions": 3, "right": pytest.approx(2 / 3, abs=1e-4), "tallies_made": "2 / 2"},
                       "kind": {"decisions": 2, "right": 0.5, "tallies_made": "1 / 1"}}


def test_the_command_prints_one_line_per_export_and_refuses_records_without_reasoning(tmp_path):
    MultimodalModel(Config.from_name("tiny")).save_pretrained(tmp_path / "m", Tokenizer.default())
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in (COLOUR, KIND, NONE)))
    command = [sys.executable, str(ROOT / "benchmarks" / "tally_probe.py"), str(manifest), str(tmp_path / "m")]
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    line = json.loads(run.stdout)
    assert line["colour"]["decisions"] == 3 and line["kind"]["decisions"] == 2 and "none" not in line
    manifest.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n")
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode != 0 and "line 1: expected question, reasoning and answer" in run.stderr
