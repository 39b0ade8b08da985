"""The GSM8K pretraining figure script runs end to end (two steps; not a learning result)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "clm_gsm8k.py"


@pytest.mark.slow
def test_clm_figure_script_runs(shared_data):
    out = subprocess.run([sys.executable, str(SCRIPT), "--data", str(shared_data / "gsm8k"), "--max-steps", "2",
                          "--minutes", "1", "--val-batches", "2", "--batch-size", "4"],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    assert "2 steps of 4x256 tokens" in out
    assert "unigram baseline" in out and "ratio" in out
