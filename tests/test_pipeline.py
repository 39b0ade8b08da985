"""`mmr1 pipeline`: every stage kind in order, skipping finished stages, resuming, one stage alone."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from mmr1.cli import main
from mmr1.datamodules.prompt import format_response
from mmr1.datamodules.synth import Synth
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.model import MultimodalModel
from mmr1.pipeline import Recipe

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"batch_size": 4, "synth_train_size": 16, "synth_val_size": 4}
SMALL_TEXT = {"batch_size": 2, "synth_train_size": 16, "block_size": 64}  # a clm stage's TextDataModule


def micro_recipe(out_dir: Path) -> dict:
    """configs/r1_tiny.yaml with every stage cut to a couple of steps."""
    recipe = yaml.safe_load((ROOT / "configs" / "r1_tiny.yaml").read_text())
    recipe.update(out_dir=str(out_dir), eval_size=4, max_new_tokens=8)
    for name, stage in recipe["stages"].items():
        if "steps" in stage:
            stage["steps"] = 2
            small = SMALL_TEXT if stage["objective"] == "clm" else SMALL
            stage["data"] = {**stage.get("data", {}), **{k: v for k, v in small.items()
                                                         if "train_manifest" not in stage.get("data", {})}}
        if stage["objective"] == "grpo":
            stage["model"].update(group_size=2, micro_batch_size=4, max_new_tokens=8)
        if "select" in stage:
            stage["select"]["every"] = 1
        if stage["objective"] == "sample":
            stage["sample"].update(synth_n=4, n=2, min_reward=0.0, max_new_tokens=8)
    return recipe


@pytest.mark.slow
def test_the_whole_recipe_runs_resumes_and_reruns_one_stage(tmp_path, monkeypatch):
    # Two steps of cold start cannot teach the format, so rejection sampling would keep nothing:
    # here every sample passes the bar (what is kept is tested in test_rejection_sampling.py).
    monkeypatch.setattr("mmr1.rl.rejection.passing", lambda texts, totals, bar: [("I count.", "3")] * len(texts))
    recipe = micro_recipe(tmp_path / "run")
    config = tmp_path / "r1.yaml"
    config.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert main(["pipeline", "--config", str(config), "--no-progress"]) == 0
    stages = list(recipe["stages"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [row["stage"] for row in summary] == stages
    scores = {"accuracy", "format_rate", "mean_reward", "accuracy_no_image", "accuracy_no_audio"}
    for row in summary:  # the alignment stages answer no questions: they are timed and report retrieval
        aligns = recipe["stages"][row["stage"]]["objective"] == "contrastive"
        assert "minutes" in row and (not scores & set(row) if aligns else scores <= set(row)), row
    assert {"r1_chance"} <= set(summary[0]) and any(k.startswith("r1_") and k != "r1_chance" for k in summary[0])
    assert (tmp_path / "run" / "rejection" / "samples.jsonl").is_file()
    for stage in ("pretrain", "sft"):  # logged like `mmr1 fit`: CSV (hparams.yaml; metrics.csv once a step logs)
        assert (tmp_path / "run" / stage / "hparams.yaml").is_file()  # and TensorBoard events
        assert any((tmp_path / "run" / stage).glob("events.out.tfevents.*"))
    final = tmp_path / "run" / "final"  # the recipe's model (`final: grpo2`), not the distilled student
    assert (final / "model.safetensors").read_bytes() == \
        (tmp_path / "run" / "grpo2" / "export" / "model.safetensors").read_bytes()
    assert MultimodalModel.from_pretrained(final).config.core.n_layers == 6  # the perceive stage's core, kept
    student = MultimodalModel.from_pretrained(tmp_path / "run" / "distill" / "export")
    assert student.config.core.n_layers == 2

    # Finished stages are skipped; a stage whose metrics.json is gone (killed) runs again, alone.
    stamps = {s: (tmp_path / "run" / s / "metrics.json").stat().st_mtime_ns for s in stages}
    (tmp_path / "run" / "grpo2" / "metrics.json").unlink()
    assert main(["pipeline", "--config", str(config), "--no-progress"]) == 0
    after = {s: (tmp_path / "run" / s / "metrics.json").stat().st_mtime_ns for s in stages}
    assert [s for s in stages if after[s] != stamps[s]] == ["grpo2"]

    assert main(["pipeline", "--config", str(config), "--no-progress", "--only", "sft", "--rerun", "sft"]) == 0
    again = {s: (tmp_path / "run" / s / "metrics.json").stat().st_mtime_ns for s in stages}
    assert [s for s in stages if again[s] != after[s]] == ["sft"]


def test_a_clm_stage_trains_the_core_on_the_records_text(tiny_checkpoint, tmp_path):
    """Without train_files a clm stage writes the text of synth_train_size built-in training records and
    trains on it; the encoders stay as they were; train_files and synth_train_size together are refused."""
    from mmr1.pipeline import Pipeline

    stage = {"objective": "clm", "steps": 2, "model": {"lr": 0.01, "warmup_steps": 1}, "data": SMALL_TEXT}
    recipe = Recipe(out_dir=tmp_path / "run", stages={"text": stage}, eval_size=2, max_new_tokens=4)
    pipeline = Pipeline(recipe, progress=False)
    pipeline._train("text", stage, tiny_checkpoint, pipeline.stage_dir("text"))
    corpus = [json.loads(line) for line in (tmp_path / "run" / "text" / "text.jsonl").read_text().splitlines()]
    assert len(corpus) == 16 and corpus[0]["id"] == "synth-train-0-0" and "image" not in corpus[0]
    before, after = MultimodalModel.from_pretrained(tiny_checkpoint), MultimodalModel.from_pretrained(
        tmp_path / "run" / "text" / "export")
    assert all(torch.equal(p, after.vision.state_dict()[k]) for k, p in before.vision.state_dict().items())
    assert not torch.equal(before.core.embed_tokens.weight, after.core.embed_tokens.weight)

    both = {**stage, "data": {**SMALL_TEXT, "train_files": [str(tmp_path / "x.jsonl")]}}
    with pytest.raises(ValueError, match="train_files or synth_train_size, not both"):
        pipeline._train("both", both, tiny_checkpoint, pipeline.stage_dir("both"))
    empty = {**stage, "data": {**SMALL_TEXT, "synth_train_size": 0}}
    with pytest.raises(ValueError, match="stage 'empty': synth_train_size: expected >= 1 records, got 0"):
        pipeline._train("empty", empty, tiny_checkpoint, pipeline.stage_dir("empty"))


def test_recipe_errors_name_the_stage(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"stages": {"warmup": {"objective": "sft"}}}))
    with pytest.raises(ValueError, match="stage 'warmup': 'steps'"):
        Recipe.from_file(config)
    config.write_text(yaml.safe_dump({"stages": {"x": {"objective": "ppo2", "steps": 1}}}))
    with pytest.raises(ValueError, match="stage 'x': objective 'ppo2'"):
        Recipe.from_file(config)
    assert main(["pipeline", "--config", str(config)]) == 2
    config.write_text("stages: [unclosed")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        Recipe.from_file(config)


def finished_stage(folder: Path, model: Path, accuracy: float) -> None:
    """A stage as a finished run leaves it: its export and its metrics.json."""
    shutil.copytree(model, folder / "export")
    (folder / "metrics.json").write_text(json.dumps({"accuracy": accuracy}))


def test_final_is_the_stage_the_recipe_names_else_the_last_model(tiny_checkpoint, tmp_path):
    from mmr1.pipeline import Pipeline

    stages = {"sft": {"objective": "sft", "steps": 1}, "rejection": {"objective": "sample"},
              "distill": {"objective": "distill", "steps": 1}}
    finished_stage(tmp_path / "sft", tiny_checkpoint, 0.9)
    (tmp_path / "sft" / "export" / "marker").write_text("sft")
    (tmp_path / "rejection").mkdir()
    (tmp_path / "rejection" / "metrics.json").write_text("{}")
    finished_stage(tmp_path / "distill", tiny_checkpoint, 0.4)
    Pipeline(Recipe(out_dir=tmp_path, stages=stages), progress=False).run()
    assert not (tmp_path / "final" / "marker").exists()  # by default the last stage that leaves a model
    Pipeline(Recipe(out_dir=tmp_path, stages=stages, final="sft"), progress=False).run()
    assert (tmp_path / "final" / "marker").read_text() == "sft"

    config = tmp_path / "r1.yaml"
    for wrong in ("rejection", "grpo"):  # a sampling stage leaves a manifest; no stage is called grpo
        config.write_text(yaml.safe_dump({"stages": stages, "final": wrong}, sort_keys=False))
        with pytest.raises(ValueError, match=rf"final: expected the name of a stage that trains a model, one of "
                                             rf"\['sft', 'distill'\]; got '{wrong}'"):
            Recipe.from_file(config)
    with pytest.raises(ValueError, match="final: expected the name of a stage that trains a model"):
        Pipeline(Recipe(out_dir=tmp_path, stages=stages, final="rejection"), progress=False).run()


def test_shipped_recipe_parses():
    recipe = Recipe.from_file(ROOT / "configs" / "r1_tiny.yaml")
    assert list(recipe.stages) == ["perceive", "pretrain", "text", "cold_start", "grpo", "rejection", "sft", "grpo2",
                                   "distill"]
    assert recipe.final == "grpo2"  # the R1 model goes to final/, the 2-layer student stays in distill/export
    assert list(Recipe.from_file(ROOT / "configs" / "r1_zero_tiny.yaml").stages) == ["pretrain", "grpo"]


def budgets(node) -> list[int]:
    """Every max_new_tokens in a parsed YAML, however deep."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "max_new_tokens"] + [b for v in node.values() for b in budgets(v)]
    return [b for v in node for b in budgets(v)] if isinstance(node, list) else []


@pytest.mark.parametrize("name", ["r1_tiny", "r1_zero_tiny", "tiny_grpo", "tiny_ppo"])
def test_shipped_token_budgets_hold_the_longest_built_in_response(name):
    """A budget shorter than the task's responses cuts the longest off: eval scores them unformatted and
    GRPO rewards them 0 (48 tokens cut 11.5% of the built-in responses, all of two templates)."""
    tokenizer = Tokenizer.default()
    longest = max(len(tokenizer.encode(format_response(spec.reasoning, spec.answer))) + 1  # + EOS
                  for spec in map(Synth(seed=0).spec, range(2000)))
    found = budgets(yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text()))
    assert found and min(found) >= longest, (found, longest)


def test_every_stage_is_scored_on_the_users_eval_manifest(tiny_checkpoint, tmp_path):
    """`eval_manifest` replaces the built-in records; the scores are `mmr1 eval`'s, with each medium withheld."""
    from mmr1.datamodules import synth
    from mmr1.pipeline import Pipeline, evaluate

    manifest = synth.write(tmp_path / "mine", 3, split="test")
    recipe = Recipe(out_dir=tmp_path / "run", stages={"sft": {"objective": "sft", "steps": 1}},
                    eval_manifest=str(manifest), eval_batch_size=2, max_new_tokens=4)
    assert Pipeline(recipe).eval_manifest(tiny_checkpoint) == manifest
    metrics = evaluate(tiny_checkpoint, recipe, manifest, tmp_path)
    assert metrics["eval_records"] == 3
    assert {"accuracy", "format_rate", "mean_reward", "accuracy_no_image", "accuracy_no_audio"} <= set(metrics)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["reference_reasoning"] for r in rows)  # what a reasoning reward compares
    recipe.rewards = {"reasoning": 1.0}  # a recipe-level reasoning reward scores the predictions too
    assert 0.0 <= evaluate(tiny_checkpoint, recipe, manifest, tmp_path / "r")["mean_reward"] <= 1.0
    recipe.eval_manifest = str(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="eval_manifest: .*missing.jsonl"):
        Pipeline(recipe).eval_manifest(tiny_checkpoint)


def test_without_eval_manifest_the_built_in_records_are_written_once(tiny_checkpoint, tmp_path):
    from mmr1.pipeline import Pipeline

    recipe = Recipe(out_dir=tmp_path, stages={"sft": {"objective": "sft", "steps": 1}}, eval_size=2)
    path = Pipeline(recipe).eval_manifest(tiny_checkpoint)
    assert path == tmp_path / "eval_data" / "test.jsonl" and len(path.read_text().splitlines()) == 2


def test_a_sampling_stage_scores_with_its_own_rewards_else_the_recipe_s(tmp_path, monkeypatch):
    from mmr1.pipeline import Pipeline

    used = []
    monkeypatch.setattr("mmr1.rl.rejection.rejection_sample", lambda **kw: used.append(kw["rewards"]) or {"written": 1})
    recipe = Recipe(out_dir=tmp_path, stages={"rejection": {"objective": "sample"}}, rewards={"accuracy": 1.0})
    pipeline = Pipeline(recipe)
    pipeline._sample({"sample": {"min_reward": 1.0}}, tmp_path, tmp_path)
    pipeline._sample({"sample": {"rewards": {"accuracy": 1.0, "reasoning": 1.0}}}, tmp_path, tmp_path)
    assert used == [{"accuracy": 1.0}, {"accuracy": 1.0, "reasoning": 1.0}]


def test_a_selecting_stage_exports_the_best_of_its_start_and_its_checkpoints(tiny_checkpoint, tmp_path):
    """`select`: GRPO validated every step on the val split; at lr 0 no checkpoint beats the start, which is kept."""
    from mmr1.pipeline import Pipeline

    grpo = {"objective": "grpo", "steps": 2, "init_from": str(tiny_checkpoint),
            "select": {"monitor": "val/accuracy", "mode": "max", "every": 1, "keep_start": True},
            "model": {"lr": 0.0, "group_size": 2, "micro_batch_size": 4, "max_new_tokens": 4},
            "data": {**SMALL, "eval_batch_size": 4}}
    recipe = Recipe(out_dir=tmp_path, stages={"grpo": grpo}, eval_size=2, max_new_tokens=4)
    Pipeline(recipe, progress=False).run()
    metrics = json.loads((tmp_path / "grpo" / "metrics.json").read_text())
    assert metrics["selected"] == "start" and metrics["start_score"] == metrics["best_score"]
    assert (tmp_path / "grpo" / "export" / "model.safetensors").read_bytes() == \
        (tiny_checkpoint / "model.safetensors").read_bytes()
    rows = (tmp_path / "grpo" / "metrics.csv").read_text().splitlines()
    accuracy = rows[0].split(",").index("val/accuracy")
    assert sum(bool(row.split(",")[accuracy]) for row in rows[1:]) == 3  # the start, then after each step


def test_select_is_checked_with_the_stage(tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text(yaml.safe_dump({"stages": {"g": {"objective": "grpo", "steps": 1,
                                                       "select": {"monitor": "val/accuracy"}}}}))
    with pytest.raises(ValueError, match="stage 'g': select: expected a training stage's"):
        Recipe.from_file(config)


def test_a_selecting_stage_on_its_own_manifest_validates_on_built_in_val_records(tiny_checkpoint, tmp_path):
    """SFT on a manifest (as after rejection sampling) with `select`: the val records are written for it (the ones
    the synthetic stages validate on); with the user's eval_manifest it must name its own val_manifest."""
    from mmr1.datamodules import synth
    from mmr1.pipeline import Pipeline

    train = synth.write(tmp_path / "train", 2, split="train")  # one batch per epoch: validation counts steps
    sft = {"objective": "sft", "steps": 2, "init_from": str(tiny_checkpoint),
           "select": {"monitor": "val/accuracy", "mode": "max", "every": 2, "keep_start": True},
           "model": {"lr": 0.0, "val_max_new_tokens": 4},
           "data": {"batch_size": 2, "train_manifest": str(train), "synth_val_size": 3}}
    Pipeline(Recipe(out_dir=tmp_path / "run", stages={"sft": sft}, eval_size=2, max_new_tokens=4), progress=False).run()
    written = [json.loads(line)["id"] for line in (tmp_path / "run" / "sft" / "val_data" / "val.jsonl").open()]
    assert written == [synth.Synth(0, "val").spec(i).id for i in range(3)]
    assert json.loads((tmp_path / "run" / "sft" / "metrics.json").read_text())["selected"] == "start"
    rows = (tmp_path / "run" / "sft" / "metrics.csv").read_text().splitlines()
    accuracy = rows[0].split(",").index("val/accuracy")
    assert sum(bool(row.split(",")[accuracy]) for row in rows[1:]) == 2  # the start, then after step 2
    mine = Recipe(out_dir=tmp_path / "mine", stages={"sft": sft}, eval_manifest=str(train), max_new_tokens=4)
    with pytest.raises(ValueError, match="stage 'sft': select validates on a val split; give data.val_manifest"):
        Pipeline(mine, progress=False).run()
