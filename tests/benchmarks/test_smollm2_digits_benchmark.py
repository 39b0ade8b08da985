"""benchmarks/smollm2_digits.py runs end to end through the mmr1 commands and the shipped configs (a tiny Hugging
Face chat model instead of the real one, a few steps per stage, one GRPO step, a few records; not a learning figure)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.needs_data
def test_smollm2_digits_benchmark_prints_the_table(tmp_path, shared_data, tiny_hf_folder):
    done = subprocess.run(
        [sys.executable, "benchmarks/smollm2_digits.py", "--speaker", "lucas", "--hf", str(tiny_hf_folder),
         "--out", str(tmp_path), "--fsdd", str(shared_data / "fsdd"), "--train", "64", "--test", "8",
         "--contrastive-steps", "2", "--prefix-steps", "2", "--sft-steps", "1", "--grpo-steps", "1",
         "--val-every", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| cold-start SFT", "| GRPO"))]
    assert len(rows) == 2 and all(row.count("%") == 4 and row.count("—") == 2 for row in rows)
    for command in ("$ mmr1 data digits", "$ mmr1 fit --config configs/digits_contrastive.yaml", "$ mmr1 import --hf",
                    "$ mmr1 init --preset tiny --overrides", "$ mmr1 fit --config configs/digits_prefix_words.yaml",
                    "$ mmr1 fit --config configs/smollm2_digits_sft.yaml",
                    "$ mmr1 fit --config benchmarks/configs/smollm2_digits_grpo.yaml", "$ mmr1 eval"):
        assert command in done.stdout
