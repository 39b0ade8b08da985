"""Crashes: a SIGKILLed fit resumes to the same weights, a NaN stops training, a failed save keeps the old file,
a diverged update is never saved, exported or loaded."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file

from mmr1.callbacks import AtomicCheckpointIO, FiniteWeights
from mmr1.datamodules.datamodules import SFTDataModule
from mmr1.objectives import SFTModule
from mmr1.inference import load
from mmr1.checkpoint import export_ckpt

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def fit_command(run: Path, *extra: str) -> list[str]:
    """`python -m mmr1 fit` on configs/tiny_sft.yaml: 6 steps over epochs of 4 batches, a checkpoint every step."""
    logger = [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run)}}]
    return [sys.executable, "-m", "mmr1", "fit", "--config", str(ROOT / "configs" / "tiny_sft.yaml"),
            "--trainer.max_steps", "6", "--trainer.val_check_interval", "4", "--trainer.limit_val_batches", "1",
            "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(run),
            f"--trainer.logger={json.dumps(logger)}", "--checkpoint.dirpath", str(run / "checkpoints"),
            "--last_checkpoint.every_n_train_steps", "1", "--data.init_args.batch_size", "2",
            "--data.init_args.synth_train_size", "8", *extra]


def metrics(run: Path) -> dict[tuple[str, str], str]:
    """{(step, metric): value} over every metrics.csv of a run (a resumed run logs to a new version)."""
    out = {}
    for path in sorted(run.rglob("metrics.csv")):
        for row in csv.DictReader(path.open()):
            out.update({(row["step"], k): v for k, v in row.items() if v and k not in ("step", "epoch")})
    return out


@pytest.mark.slow
def test_sigkilled_fit_resumes_to_the_uninterrupted_weights(tmp_path):
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    reference = subprocess.Popen(fit_command(straight), cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(fit_command(crashed), cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    last = crashed / "checkpoints" / "last.ckpt"
    while not last.exists() and victim.poll() is None:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert 1 <= killed_at < 4  # mid-epoch: an epoch is 4 batches

    resumed = subprocess.run(fit_command(crashed, "--ckpt_path", "last"), cwd=tmp_path, env=ENV,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert reference.wait() == 0, reference.stderr.read()[-3000:]

    final = {run: torch.load(run / "checkpoints" / "last.ckpt", weights_only=True) for run in (straight, crashed)}
    assert final[crashed]["global_step"] == final[straight]["global_step"] == 6
    for name, weight in final[straight]["state_dict"].items():
        torch.testing.assert_close(final[crashed]["state_dict"][name], weight, rtol=0, atol=1e-6, msg=name)
    exported = {run: load_file(next(run.rglob("export/model.safetensors"))) for run in (straight, crashed)}
    for name, weight in exported[straight].items():
        torch.testing.assert_close(exported[crashed][name], weight, rtol=0, atol=1e-6)
    after_resume = {key: value for key, value in metrics(crashed).items() if int(key[0]) >= killed_at}
    assert any(name == "val/loss" for _, name in after_resume)
    for key, value in after_resume.items():
        assert float(value) == pytest.approx(float(metrics(straight)[key]), abs=1e-6), key


class PoisonAt(L.Callback):
    """Fills one weight with NaN before the given training step."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.model.core.norm.weight.fill_(float("nan"))


def test_nan_stops_training_and_the_last_good_checkpoint_survives(tmp_path):
    torch.manual_seed(0)
    module = SFTModule(preset="tiny", warmup_steps=1)
    data = SFTDataModule(config=module.config, batch_size=2, synth_train_size=8, synth_val_size=2)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1)
    trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, plugins=[AtomicCheckpointIO()],
                        callbacks=[checkpoints, PoisonAt(2)])
    with pytest.raises(FloatingPointError, match=r"step 2: loss term 'loss' is nan"):
        trainer.fit(module, data)

    last = tmp_path / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(w).all() for w in checkpoint["state_dict"].values())
    export_ckpt(last, tmp_path / "export")  # loadable into a model

    saved = last.read_bytes()

    def dies_midway(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk went away")

    with mock.patch("mmr1.callbacks.torch.save", dies_midway), pytest.raises(OSError, match="disk went away"):
        trainer.save_checkpoint(last)
    assert last.read_bytes() == saved
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(
        p.name for p in tmp_path.iterdir() if p.is_file() and not p.name.endswith(".tmp"))


class InfiniteGradientAt(L.Callback):
    """Makes one gradient infinite before the given optimizer step: AdamW turns the weight into NaN."""

    def __init__(self, step: int):
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.step:
            pl_module.model.core.norm.weight.grad.fill_(float("inf"))


def tiny_trainer(folder: Path, max_steps: int, *callbacks: L.Callback) -> L.Trainer:
    checkpoints = ModelCheckpoint(dirpath=folder, save_last=True, every_n_train_steps=1)
    return L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, plugins=[AtomicCheckpointIO()],
                     callbacks=[checkpoints, FiniteWeights(), *callbacks])


def test_a_diverged_update_stops_before_it_is_saved_and_last_ckpt_resumes(tmp_path):
    torch.manual_seed(0)
    module = SFTModule(preset="tiny", warmup_steps=1)
    data = SFTDataModule(config=module.config, batch_size=2, synth_train_size=8, synth_val_size=2)
    with pytest.raises(FloatingPointError,
                       match=r"step 4: parameter 'model.core.norm.weight' is not finite after the optimizer step"):
        tiny_trainer(tmp_path, 6, InfiniteGradientAt(3)).fit(module, data)
    assert not torch.isfinite(module.model.core.norm.weight).all()  # the update really diverged

    last = tmp_path / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 3
    assert all(torch.isfinite(w).all() for w in checkpoint["state_dict"].values())
    resumed = SFTModule(preset="tiny", warmup_steps=1)
    trainer = tiny_trainer(tmp_path / "resumed", 5)
    trainer.fit(resumed, SFTDataModule(config=resumed.config, batch_size=2, synth_train_size=8), ckpt_path=last)
    assert trainer.global_step == 5 and all(torch.isfinite(p).all() for p in resumed.parameters())


def test_export_and_load_refuse_non_finite_weights_by_name(tmp_path):
    torch.manual_seed(0)
    module = SFTModule(preset="tiny", warmup_steps=1)
    trainer = tiny_trainer(tmp_path, 1)
    trainer.fit(module, SFTDataModule(config=module.config, batch_size=2, synth_train_size=2))
    with torch.no_grad():
        module.model.fusion.type_embed["image"][0] = float("inf")
    poisoned = tmp_path / "poisoned.ckpt"
    trainer.save_checkpoint(poisoned)
    bad = r"'model.fusion.type_embed.image' holds NaN or Inf"
    with pytest.raises(ValueError, match=rf"poisoned.ckpt: refusing to export: tensor {bad}"):
        export_ckpt(poisoned, tmp_path / "export")
    assert not (tmp_path / "export").exists()
    with pytest.raises(ValueError, match=rf"poisoned.ckpt: refusing to load: tensor {bad}"):
        load(poisoned)
    with pytest.raises(ValueError, match=r"refusing to save: tensor 'fusion.type_embed.image' holds NaN"):
        module.model.save_pretrained(tmp_path / "folder")

    folder = export_ckpt(tmp_path / "last.ckpt", tmp_path / "good")  # a finite folder, then damaged on disk
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    state["core.norm.weight"][1] = float("nan")
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.safetensors: refusing to load: tensor 'core.norm.weight' holds NaN"):
        load(folder)


@pytest.mark.slow
def test_the_cli_stops_a_diverging_run_and_keeps_last_ckpt_finite(tmp_path):
    """The reproduction of the report: lr 1e5 without clipping makes the weights non-finite within steps."""
    run = tmp_path / "run"
    result = subprocess.run(fit_command(run, "--model.init_args.lr", "1e5", "--model.init_args.warmup_steps", "30",
                                        "--trainer.gradient_clip_val", "null"),
                            cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert result.returncode != 0
    assert "is not finite after the optimizer step" in result.stderr, result.stderr[-3000:]
    for path in (run / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, weights_only=True)
        assert all(torch.isfinite(w).all() for w in checkpoint["state_dict"].values()), path
