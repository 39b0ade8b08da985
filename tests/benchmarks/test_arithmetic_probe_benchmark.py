"""benchmarks/arithmetic_probe.py: it asks for every result of the digits task and scores only the result."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from arithmetic_probe import prompts, wrong_results  # noqa: E402


RESULTS = {prompt: result for _, _, prompt, result in prompts()}


def oracle(text: str) -> str:
    """What a model that computes right writes next: the result of the prompt's question and digits."""
    assert text in RESULTS, f"not a probe prompt: {text!r}"
    return f" {RESULTS[text]}. <answer>"


def test_every_pair_of_every_kind_is_asked_once_and_cut_before_its_result():
    rows = prompts()
    assert len(rows) == 400 and len({text for _, _, text, _ in rows}) == len({step for _, step, _, _ in rows}) == 400
    sums = {step: text for kind, step, text, _ in rows if kind == "sum"}
    assert sums["4 + 8 = 12."].endswith("The picture shows 4. The sound says 8. 4 + 8 =")
    larger = {step: text for kind, step, text, _ in rows if kind == "larger"}
    assert larger["max(8, 3) = 8."].endswith("The picture shows 8. The sound says 3. The larger is")
    assert all("<answer>" not in text for _, _, text, _ in rows)  # the answer comes after the cut


def test_only_a_wrong_first_number_counts():
    assert wrong_results(oracle) == {"sum": [], "difference": [], "product": [], "larger": []}

    def off_by_one_sums(text: str) -> str:
        written = oracle(text)
        if " + " in text.rsplit(".", 1)[-1]:
            return " " + str(int(written.split(".")[0]) + 1) + "."
        return written

    wrong = wrong_results(off_by_one_sums)
    assert len(wrong["sum"]) == 100 and "4 + 8 = 12. wrote '13.'" in wrong["sum"]
    assert wrong["difference"] == wrong["product"] == wrong["larger"] == []
    assert len(wrong_results(lambda text: " -")["difference"]) == 100  # a sign without a number is wrong
    assert len(wrong_results(lambda text: " 1")["larger"]) == 97  # right where max(a, b) = 1: 3 pairs


def test_arithmetic_probe_runs_on_a_checkpoint(tiny_checkpoint):
    done = subprocess.run([sys.executable, "benchmarks/arithmetic_probe.py", str(tiny_checkpoint)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["wrong_of_100"]) == {"sum", "difference", "product", "larger"}
    assert all(0 <= n <= 100 and n == len(result["wrong"][k]) for k, n in result["wrong_of_100"].items())
