"""benchmarks/real_digits.py runs end to end through the mmr1 commands (a few steps per stage)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.needs_data
def test_real_digits_benchmark_prints_the_table(tmp_path, shared_data):
    done = subprocess.run(
        [sys.executable, "benchmarks/real_digits.py", "--speaker", "lucas", "--out", str(tmp_path),
         "--fsdd", str(shared_data / "fsdd"), "--train", "96", "--test", "16", "--contrastive-steps", "2",
         "--text-steps", "2", "--sft-steps", "2", "--grpo-steps", "1", "--val-every", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| cold-start SFT") or
            line.startswith("| GRPO")]
    assert len(rows) == 2 and all(row.count("%") == 6 for row in rows)
    assert "alignment probe (nearest class mean, chance 10%): {\"image_digit_val\": " in done.stdout
    assert "$ mmr1 data digits" in done.stdout and "$ mmr1 eval" in done.stdout
