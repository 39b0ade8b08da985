"""The LightningCLI entry point, the shipped configs and `.ckpt` export."""

import json
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

from lightning.pytorch.callbacks import RichProgressBar

from mmr1.callbacks import AtomicCheckpointIO
from mmr1.model import MultimodalModel
from mmr1.checkpoint import export_ckpt
from mmr1.cli.train import TrainingCLI, cli_main

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")
                 if not p.name.startswith("r1_"))  # recipes are tested in test_pipeline.py


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One 2-step fit of configs/tiny_sft.yaml, with one validation, in a temporary folder."""
    root = tmp_path_factory.mktemp("sft")
    loggers = [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(root)}},
               {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(root / "tensorboard")}}]
    with mock.patch.object(sys, "argv", ["mmr1"]):
        cli_main(["fit", "--config", str(CONFIGS[[c.name for c in CONFIGS].index("tiny_sft.yaml")]),
                  "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
                  "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
                  f"--trainer.logger={json.dumps(loggers)}", "--checkpoint.dirpath", str(root / "checkpoints"),
                  "--data.init_args.batch_size", "2"])
    return root / "lightning_logs" / "version_0"


def test_fit_exports_a_loadable_checkpoint_folder(run_dir):
    model = MultimodalModel.from_pretrained(run_dir / "export")
    assert model.config.name == "tiny"
    assert (run_dir / "export" / "tokenizer.json").is_file()
    checkpoints = run_dir.parents[1] / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    assert any(p.name.startswith("best") for p in checkpoints.iterdir())
    assert "val/loss" in (run_dir / "metrics.csv").read_text()
    assert any((run_dir.parents[1] / "tensorboard").rglob("events.out.tfevents.*"))


def test_export_ckpt_matches_the_trained_weights(run_dir, tmp_path):
    ckpt = run_dir.parents[1] / "checkpoints" / "last.ckpt"
    model = MultimodalModel.from_pretrained(export_ckpt(ckpt, tmp_path / "out"))
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    torch.testing.assert_close(model.core.embed_tokens.weight, state["model.core.embed_tokens.weight"])


def test_export_ckpt_refuses_foreign_checkpoints(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="no mmr1_config"):
        export_ckpt(tmp_path / "x.ckpt", tmp_path / "out")


# what a config's model needs beyond the tiny preset when its init_from (a folder) is not given
NEEDS = {"digits_prefix_words.yaml": ["--model.init_args.overrides", '{"fusion": {"vocab_prefix": true}}']}


# most steps a shipped config may train: tiny_* take minutes on a CPU; digits_* are the real-data recipe, about 15
# CPU-minutes of training in all, whose alignment steps are the cheapest (1,600 of them take about 7 minutes)
STEP_BUDGETS = {"digits_contrastive.yaml": 1600, "digits_": 1000, "": 500}  # the longest matching name prefix wins


def step_budget(name: str) -> int:
    return STEP_BUDGETS[max((prefix for prefix in STEP_BUDGETS if name.startswith(prefix)), key=len)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_builds_linked_model_and_data(config, tmp_path, monkeypatch):
    assert config.read_text().startswith(f"# mmr1 fit --config configs/{config.name}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["mmr1"])
    cli = TrainingCLI(["--config", str(config), *NEEDS.get(config.name, [])], run=False)
    assert cli.datamodule.config is cli.model.config
    assert cli.trainer.max_steps <= step_budget(config.name)
    assert any(isinstance(c, RichProgressBar) for c in cli.trainer.callbacks)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    # no run paths: every output under --trainer.default_root_dir
    assert Path(cli.trainer.log_dir).resolve() == tmp_path / "lightning_logs" / "version_0"
    assert all(c.dirpath is None for c in cli.trainer.checkpoint_callbacks)  # -> <log_dir>/checkpoints


def test_default_root_dir_holds_every_output_and_last_resumes_in_place(tmp_path, monkeypatch, capsys):
    from mmr1.cli import main

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    root = tmp_path / "run"
    args = ["--config", str(CONFIGS[[c.name for c in CONFIGS].index("tiny_sft.yaml")]),
            "--trainer.default_root_dir", str(root), "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
            "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--last_checkpoint.every_n_train_steps", "1", "--data.init_args.batch_size", "2",
            "--data.init_args.synth_train_size", "8", "--data.init_args.synth_val_size", "2"]
    assert main(["fit", *args]) == 0
    run = root / "lightning_logs" / "version_0"
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"exported {run / 'export'}"
    assert (run / "metrics.csv").is_file() and any(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "export" / "model.safetensors").is_file()
    assert not any((tmp_path / "cwd").iterdir())
    assert main(["fit", *args, "--trainer.max_steps", "3", "--ckpt_path", "last"]) == 0  # resumes in place
    assert not (root / "lightning_logs" / "version_1").exists()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert main(["fit", *args]) == 0  # a new run: a folder of its own
    assert (root / "lightning_logs" / "version_1" / "export").is_dir()


def test_lora_fit_exports_merged_plain_weights(tmp_path, monkeypatch):
    """2 steps of configs/tiny_lora.yaml on a 1-layer core: the export is a plain model equal to the merged .ckpt."""
    from mmr1.checkpoint import load_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["mmr1"])
    config = CONFIGS[[c.name for c in CONFIGS].index("tiny_lora.yaml")]
    cli_main(["fit", "--config", str(config), "--model.init_args.overrides", '{"core": {"n_layers": 1}}',
              "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
              "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
              "--trainer.default_root_dir", str(tmp_path), "--checkpoint.dirpath", str(tmp_path / "checkpoints"),
              "--data.init_args.batch_size", "2", "--data.init_args.synth_train_size", "8",
              "--data.init_args.synth_val_size", "2"])
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["mmr1_lora"]["targets"] == ["q_proj", "v_proj"]
    assert any("lora_B" in k for k in checkpoint["state_dict"])
    exported = MultimodalModel.from_pretrained(tmp_path / "export")
    assert not any("lora_" in k or "base_layer" in k for k in exported.state_dict())
    base_weight = checkpoint["state_dict"]["model.core.layers.0.self_attn.q_proj.base_layer.weight"]
    assert not torch.equal(exported.core.layers[0].self_attn.q_proj.weight, base_weight)  # the adapter is merged in
    merged, _ = load_model(tmp_path / "checkpoints" / "last.ckpt")
    for name, value in merged.state_dict().items():
        torch.testing.assert_close(exported.state_dict()[name], value)


def start_candidate_fit(start: Path, root: Path, *extra: str) -> Path:
    """4 SFT steps of configs/tiny_sft.yaml from `start`, validated every 2, with `StartCandidate`; the run folder."""
    cli_main(["fit", "--config", str(CONFIGS[[c.name for c in CONFIGS].index("tiny_sft.yaml")]),
              "--model.init_args.init_from", str(start), "--trainer.callbacks+=mmr1.callbacks.StartCandidate",
              "--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
              "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
              "--data.init_args.batch_size", "2", "--data.init_args.synth_train_size", "8",
              "--data.init_args.synth_val_size", "2", *extra])
    return root / "lightning_logs" / "version_0"


def test_start_candidate_exports_the_start_unless_a_checkpoint_beats_it(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["mmr1"])
    # lr 0: every checkpoint scores what the start does, and a tie keeps the start, byte for byte
    run = start_candidate_fit(tiny_checkpoint, tmp_path / "tie", "--model.init_args.lr", "0.0")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"exported {run / 'export'}" and f"exporting the start model {tiny_checkpoint}" in lines[-2]
    assert (run / "export" / "model.safetensors").read_bytes() == (tiny_checkpoint / "model.safetensors").read_bytes()
    rows = (run / "metrics.csv").read_text().splitlines()  # epoch,step,val/loss: the start's at step 0, then 2
    assert rows[0] == "epoch,step,val/loss" and rows[1].startswith("0,0,") and len(rows) == 4
    # a real lr: the checkpoint's val/loss beats the random start's, and that checkpoint is exported
    run = start_candidate_fit(tiny_checkpoint, tmp_path / "trained", "--model.init_args.lr", "0.003")
    best = run / "checkpoints" / "best-step=4.ckpt"
    assert f"exporting {best}" in capsys.readouterr().out
    trained = MultimodalModel.from_pretrained(run / "export")
    state = torch.load(best, weights_only=True)["state_dict"]
    torch.testing.assert_close(trained.core.embed_tokens.weight, state["model.core.embed_tokens.weight"])
    start = MultimodalModel.from_pretrained(tiny_checkpoint)
    assert not torch.equal(trained.core.embed_tokens.weight, start.core.embed_tokens.weight)


def test_start_candidate_needs_a_start_folder_and_the_monitored_metric(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["mmr1"])
    with pytest.raises(ValueError, match="StartCandidate: the run starts from no model folder"):
        start_candidate_fit(Path("unused"), tmp_path / "a", "--model.init_args.init_from", "null")
    with pytest.raises(ValueError, match="StartCandidate: validation logged no 'val/nothing'"):
        start_candidate_fit(tiny_checkpoint, tmp_path / "b", "--checkpoint.monitor", "val/nothing")
    monkeypatch.setattr("lightning.Trainer.validate", lambda *args, **kwargs: [{"val/loss": float("nan")}])
    with pytest.raises(ValueError, match="StartCandidate: the start model's val/loss is nan; expected a finite"):
        start_candidate_fit(tiny_checkpoint, tmp_path / "c")


def test_start_candidate_score_travels_in_the_checkpoint():
    from mmr1.callbacks import StartCandidate

    candidate = StartCandidate()
    candidate.score, candidate.folder = 0.5, "runs/x/export"
    resumed = StartCandidate()
    resumed.load_state_dict(candidate.state_dict())
    assert (resumed.score, resumed.folder) == (0.5, "runs/x/export")
