"""The decode benchmark runs and decodes the same tokens as transformers (small sizes; not a timing)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "decode.py"


def test_decode_benchmark_runs_and_matches_transformers():
    out = subprocess.run([sys.executable, str(SCRIPT), "--batch", "2", "--prompt", "8", "--new", "6",
                          "--repeats", "1"], capture_output=True, text=True, timeout=300, check=True).stdout
    assert "same greedy tokens as transformers: True" in out
    assert "ratio mmr1 / transformers" in out and "ratio cached / uncached" in out
