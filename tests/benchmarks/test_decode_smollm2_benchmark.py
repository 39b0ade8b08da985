"""The SmolLM2 decode benchmark runs and decodes the same tokens as transformers (a tiny Hugging Face
chat model instead of the real one, small settings; not a timing)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "decode_smollm2.py"


def test_decode_smollm2_benchmark_runs_and_matches_transformers(tiny_hf_folder):
    out = subprocess.run([sys.executable, str(SCRIPT), "--hf", str(tiny_hf_folder), "--batches", "1", "3",
                          "--new", "6", "--repeats", "1", "--int8"], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    for batch in (1, 3):
        assert f"batch {batch}: same greedy tokens as transformers: True" in out
        assert f"batch {batch}: mmr1 core + KV cache" in out and "ratio mmr1 / transformers" in out
        assert f"batch {batch}: weight bytes read per second / copy bandwidth: mmr1 " in out
        assert f"batch {batch}: mmr1 core int8" in out and "before the first that differs from the fp32 core's" in out
    assert "memory: copy bandwidth" in out and "steps/s" in out
