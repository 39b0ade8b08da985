"""benchmarks/shape_listing.py: it scores listings shape by shape, in order, and only records that list shapes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from shape_listing import score  # noqa: E402

REFERENCES = {
    "a": "I see a red circle, a blue square (1 blue) and a blue square (2 blue). 2 shapes are blue.",
    "b": "I see a green triangle and a red circle. That is 2 shapes.",
    "c": "I hear 2 beeps: low, high. That is 2 beeps.",  # lists no shapes
}


def test_each_shape_is_scored_in_order_and_a_wrong_count_is_left_out_of_the_per_shape_figures():
    rows = [{"id": "a", "reasoning": REFERENCES["a"], "correct": True},
            {"id": "b", "reasoning": "I see a red circle and a green triangle. That is 2 shapes.", "correct": True},
            {"id": "c", "reasoning": "I hear 2 beeps: low, low.", "correct": False}]
    figures = score(REFERENCES, rows)
    assert figures["records_listing_shapes"] == 2 and figures["accuracy"] == pytest.approx(2 / 3)
    assert figures["listed_exactly"] == 0.5 and figures["count_right"] == 1.0
    assert figures["shape_colour"] == pytest.approx(3 / 5) and figures["shape_kind"] == pytest.approx(3 / 5)
    rows[1]["reasoning"] = "I see a green triangle. That is 1 shape."  # one shape short: no per-shape figures
    figures = score(REFERENCES, rows)
    assert figures["count_right"] == 0.5 and figures["shape_colour"] == figures["shape_kind"] == 1.0


def test_the_command_prints_one_line_per_predictions_file_and_refuses_unknown_ids(tmp_path):
    manifest, predictions = tmp_path / "test.jsonl", tmp_path / "predictions.jsonl"
    manifest.write_text("".join(json.dumps({"id": k, "reasoning": v}) + "\n" for k, v in REFERENCES.items()))
    predictions.write_text(json.dumps({"id": "a", "reasoning": REFERENCES["a"], "correct": True}) + "\n")
    command = [sys.executable, str(ROOT / "benchmarks" / "shape_listing.py"), str(manifest), str(predictions)]
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    assert json.loads(run.stdout)["listed_exactly"] == 1.0
    predictions.write_text(json.dumps({"id": "zz", "reasoning": "", "correct": False}) + "\n")
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode != 0 and "ids not in" in run.stderr
