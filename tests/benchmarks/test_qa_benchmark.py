"""The QA benchmark runs end to end at tiny sizes and prints its table (not a timing)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "qa.py"


def test_qa_benchmark_prints_fp32_and_int8_rows():
    out = subprocess.run([sys.executable, str(SCRIPT), "--presets", "tiny", "--batch-sizes", "1", "2",
                          "--new-tokens", "2", "--repeats", "1"], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("tiny")]
    assert [(r[1], r[3]) for r in rows] == [("fp32", "1"), ("fp32", "2"), ("int8", "1"), ("int8", "2")]
    assert all(r[-1] == "100%" for r in rows[:2])  # fp32 agrees with itself
