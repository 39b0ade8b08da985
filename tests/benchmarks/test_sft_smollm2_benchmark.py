"""The SmolLM2 SFT-step benchmark runs, and both sides start from the same loss on the same batch (a tiny
Hugging Face chat model instead of the real one, two GSM8K-style problems; not a timing)."""

import json
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sft_smollm2.py"


def test_sft_smollm2_benchmark_runs_the_same_loss_as_transformers(tiny_hf_folder, tmp_path):
    gsm8k = tmp_path / "train.jsonl"
    gsm8k.write_text("".join(json.dumps({"question": f"Tom has {n} apples and buys 5 more. How many?",
                                         "answer": f"{n} + 5 = <<{n}+5={n + 5}>>{n + 5}\n#### {n + 5}"}) + "\n"
                             for n in (3, 12)))
    out = subprocess.run([sys.executable, str(SCRIPT), "--hf", str(tiny_hf_folder), "--gsm8k", str(gsm8k),
                          "--batch", "2", "--steps", "1", "--full"], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    assert "batch (2, " in out
    for name in ("LoRA r16", "full fine-tuning"):
        difference = float(re.search(rf"{name}: loss before training: .*\|difference\| ([0-9.e+-]+)", out).group(1))
        assert difference < 1e-4, out
        assert re.search(rf"{name}: mmr1 +\d+ ms/step .* time mmr1 / transformers \d+\.\d\d", out), out
    lora, full = (float(x) for x in re.findall(r"trainable weights ([0-9.]+)M", out))
    assert 0 < lora < full
