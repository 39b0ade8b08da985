"""The SmolLM2 GRPO-step benchmark runs mmr1's GRPOModule and TRL's GRPOTrainer on the same model and
prompts (a tiny Hugging Face chat model instead of the real one, small settings; not a timing)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "grpo_smollm2.py"


def test_grpo_smollm2_benchmark_times_both_libraries(tiny_hf_folder, tmp_path):
    pytest.importorskip("trl", reason="TRL is in the dev extra; this benchmark compares against it")
    gsm8k = tmp_path / "train.jsonl"
    gsm8k.write_text("".join(json.dumps({"question": f"Tom has {n} apples and buys 5 more. How many?",
                                         "answer": f"{n} + 5 = {n + 5}\n#### {n + 5}"}) + "\n" for n in range(4)))
    out = subprocess.run([sys.executable, str(SCRIPT), "--hf", str(tiny_hf_folder), "--gsm8k", str(gsm8k),
                          "--prompts", "2", "--group", "2", "--new", "6", "--steps", "1"],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    lengths = re.search(r"mean response length: mmr1 ([0-9.]+) tokens, TRL ([0-9.]+) tokens", out)
    assert lengths and all(0 < float(x) <= 6 for x in lengths.groups()), out
    assert re.search(r"once per response \(share_prompt off\): [0-9.]+ s / [0-9.]+ s = \d+\.\d\d", out), out
    assert re.search(r"GRPO step: mmr1 +[0-9.]+ s \| TRL GRPOTrainer +[0-9.]+ s \| time mmr1 / TRL \d+\.\d\d", out), out
