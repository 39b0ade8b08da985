"""benchmarks/smollm2_arithmetic.py runs end to end through the mmr1 commands and the shipped configs (a tiny
Hugging Face chat model instead of the real one, one SFT and one GRPO step, a few problems; not a learning figure)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smollm2_arithmetic_benchmark_prints_every_stage(tmp_path, tiny_hf_folder):
    done = subprocess.run(
        [sys.executable, "benchmarks/smollm2_arithmetic.py", "--hf", str(tiny_hf_folder), "--out", str(tmp_path),
         "--train", "12", "--val", "4", "--test", "4", "--sft-steps", "1", "--grpo-steps", "1", "--val-every", "1",
         "--max-new-tokens", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| imported", "| cold-start SFT", "| GRPO"))]
    assert len(rows) == 3 and all(row.count("%") == 3 for row in rows)
    for command in ("$ mmr1 import --hf", "$ mmr1 data arithmetic",
                    "$ mmr1 fit --config configs/smollm2_arithmetic_sft.yaml",
                    "$ mmr1 fit --config benchmarks/configs/smollm2_arithmetic_grpo.yaml"):
        assert command in done.stdout
    lines = {s: (tmp_path / "data" / f"{s}.jsonl").read_text().splitlines() for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in lines.items()} == {"train": 12, "val": 4, "test": 4}
    assert len({json.loads(line)["id"] for v in lines.values() for line in v}) == 20
