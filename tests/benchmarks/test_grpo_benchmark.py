"""The GRPO benchmark runs end to end at tiny sizes and prints every phase and the ratio (not a timing)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "grpo.py"


@pytest.mark.slow
def test_grpo_benchmark_prints_phases_and_rollout_ratio():
    out = subprocess.run([sys.executable, str(SCRIPT), "--prompts", "2", "--group", "2", "--new", "4", "--steps", "1"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    phases = [line.split(":")[0].strip() for line in out.splitlines() if line.startswith("  ") and " ms" in line]
    assert phases[:5] == ["rollout", "reward", "reference/old log-probs", "update", "step"]
    assert "tokens/s" in out.splitlines()[1]
    assert "shared prefix cache (sample_groups)" in out and "naive, prefix re-encoded per sample" in out
    assert "ratio naive / shared rollout time" in out
