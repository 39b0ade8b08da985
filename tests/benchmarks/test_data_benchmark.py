"""The data benchmark runs end to end and prints its ratio (small sizes; not a timing)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data.py"


def test_data_benchmark_runs():
    out = subprocess.run([sys.executable, str(SCRIPT), "--n", "32", "--batch-size", "8"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "tiny SFT training step consumes" in out
    assert "ratio loader (synth, 2 workers) / training step" in out
