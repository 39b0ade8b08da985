"""The training benchmark runs end to end at tiny sizes and prints its table and ratios (not a timing)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train.py"


@pytest.mark.slow
def test_train_benchmark_prints_table_and_ratios():
    out = subprocess.run([sys.executable, str(SCRIPT), "--presets", "tiny", "--batch", "2", "--seq", "32",
                          "--steps", "2"], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "GFLOP/step" in out and "MFU" in out and "peak MiB" in out
    for model in ("mmr1 core, no IRM", "mmr1 core, IRM x1", "transformers Llama", "mmr1 multimodal SFT"):
        assert f"{model} " in out
    assert "ratio mmr1 core / Llama MFU (tiny, fp32): " in out
    assert "multimodal MFU at tiny (fp32): " in out
