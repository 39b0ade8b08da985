"""Every command the README shows runs, in order, as a user would type it."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# Commands too long for this test run elsewhere, each by the test named here.
COVERED_ELSEWHERE = {
    "mmr1 pipeline --config configs/r1_tiny.yaml": "tests/test_pipeline.py",  # the recipe, cut to a few steps
    "mmr1 qa --checkpoint runs/r1_tiny/final --sample": "tests/cli/test_infer.py",
    # reads ../shared/data/fsdd, beside the repository rather than the test's working folder
    "mmr1 data digits --out runs/digits_data --fsdd ../shared/data/fsdd --test-speaker theo":
        "tests/datamodules/test_digits.py",
}


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def make_recipe(target: str) -> list[str]:
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    return [line.strip().replace("$(VENV)/bin/", "") for line in recipe.group(1).splitlines()]


def test_front_door_is_make_run_then_make_test():
    assert readme_commands()[:2] == ["make run", "make test"]
    assert make_recipe("test") == ["python -m pytest -q"]
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_make_run_is_what_the_readme_says():
    commands = readme_commands()
    recipe = make_recipe("run")
    start = commands.index(recipe[0])
    assert commands[start:start + len(recipe)] == recipe


def test_commands_covered_elsewhere_are_in_the_readme_and_their_tests_exist():
    for command, test in COVERED_ELSEWHERE.items():
        assert command in readme_commands() and (ROOT / test).is_file()


@pytest.mark.slow
def test_every_mmr1_command_in_the_readme_runs(tmp_path):
    commands = [c for c in readme_commands() if c.startswith("mmr1 ") and c not in COVERED_ELSEWHERE]
    assert len(commands) >= 8
    bin_dir = Path(sys.executable).parent
    for command in commands:
        argv = shlex.split(command)
        result = subprocess.run([str(bin_dir / argv[0]), *argv[1:]], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
