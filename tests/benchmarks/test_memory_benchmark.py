"""The memory benchmark runs end to end at tiny sizes and prints both comparisons (not a timing)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "memory.py"


@pytest.mark.slow
def test_memory_benchmark_runs():
    out = subprocess.run([sys.executable, str(SCRIPT), "--preset", "tiny", "--batch-size", "2", "--warmup", "1",
                          "--steps", "1"], capture_output=True, text=True, timeout=300, check=True).stdout
    assert "with activation checkpointing (" in out
    assert "ratio compiled / eager" in out
