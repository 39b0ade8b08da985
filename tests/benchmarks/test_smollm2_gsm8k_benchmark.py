"""benchmarks/smollm2_gsm8k.py runs end to end through the mmr1 commands (a tiny Hugging Face chat model
instead of the real one, one SFT step, a few problems; not a learning figure)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.needs_data
def test_smollm2_gsm8k_benchmark_prints_before_and_after(tmp_path, shared_data, tiny_hf_folder):
    done = subprocess.run(
        [sys.executable, "benchmarks/smollm2_gsm8k.py", "--hf", str(tiny_hf_folder), "--out", str(tmp_path),
         "--gsm8k", str(shared_data / "gsm8k"), "--train", "10", "--test", "4", "--steps", "1",
         "--val-every", "1", "--max-new-tokens", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| imported", "| after SFT"))]
    assert len(rows) == 2 and all(row.count("%") == 3 for row in rows)
    assert "$ mmr1 import --hf" in done.stdout and "$ mmr1 fit --config configs/smollm2_gsm8k_sft.yaml" in done.stdout
    val = (tmp_path / "data" / "val.jsonl").read_text().splitlines()
    train = (tmp_path / "data" / "train.jsonl").read_text().splitlines()
    assert (len(train), len(val)) == (10, 2) and not set(train) & set(val)
