import json
import re

import pytest

from mmr1.cli import main
from mmr1.datamodules.arithmetic import problems, reasoning, record, solve, write
from mmr1.datamodules.prompt import format_response
from mmr1.metrics import correct

STEP = re.compile(r"(-?\d+) ([-+*]) (-?\d+) = (-?\d+)\.")


def test_every_step_of_the_reasoning_holds_and_ends_in_the_answer():
    for split, drawn in problems({"train": 300, "val": 30, "test": 30}).items():
        for a, op, b in drawn:
            r = record(a, op, b, split)
            steps = STEP.findall(r["reasoning"])
            assert len(steps) == (3 if op == "*" else 2), r
            for x, sym, y, result in steps:
                assert solve(int(x), sym, int(y)) == int(result), r
            assert steps[-1][3] == r["answer"] == str(solve(a, op, b))
            assert r["question"] == f"What is {a} {op} {b}?"
            assert correct(format_response(r["reasoning"], r["answer"]), r["answer"])


def test_place_value_steps():
    assert reasoning(47, "+", 38) == "47 + 30 = 77. 77 + 8 = 85."
    assert reasoning(48, "-", 71) == "48 - 70 = -22. -22 - 1 = -23."
    assert reasoning(47, "*", 6) == "40 * 6 = 240. 7 * 6 = 42. 240 + 42 = 282."


def test_splits_share_no_problem_and_growing_train_keeps_test():
    small, large = problems({"train": 100, "val": 50, "test": 50}, seed=3), problems({"train": 900, "test": 50}, seed=3)
    sets = {split: set(drawn) for split, drawn in small.items()}
    assert all(len(sets[s]) == len(small[s]) for s in sets)  # distinct within a split
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert large["test"] == small["test"]
    assert problems({"test": 50}, seed=4)["test"] != small["test"]
    ops = [op for _, op, _ in large["train"]]
    assert ops.count("+") == ops.count("-") == ops.count("*") == 300
    assert all(2 <= b <= 9 for _, op, b in large["train"] if op == "*")


@pytest.mark.parametrize("sizes, message", [({"dev": 3}, "unknown split"), ({"train": -1}, "counts >= 0"),
                                            ({"train": 20000}, "distinct ones exist"),
                                            ({"train": 2400}, r"800 problems with '\*' asked for, only 720")])
def test_bad_sizes_are_refused_by_name(sizes, message):
    with pytest.raises(ValueError, match=message):
        problems(sizes)


def test_command_writes_the_three_manifests(tmp_path, capsys):
    assert main(["data", "arithmetic", "--out", str(tmp_path), "--train", "12", "--val", "3", "--test", "4"]) == 0
    rows = {s: [json.loads(line) for line in (tmp_path / f"{s}.jsonl").open()] for s in ("train", "val", "test")}
    assert {s: len(r) for s, r in rows.items()} == {"train": 12, "val": 3, "test": 4}
    assert rows["test"][0]["id"].startswith("arith-test-") and "test.jsonl" in capsys.readouterr().out
    assert write(tmp_path / "again", {"train": 12, "val": 3, "test": 4})["test"].read_text() == \
        (tmp_path / "test.jsonl").read_text()
