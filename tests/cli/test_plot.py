"""`mmr1 plot` on the metrics.csv of a real (short) run."""

import sys
from pathlib import Path
from unittest import mock

import pytest
from PIL import Image

from mmr1.cli import main as mmr1_main
from mmr1.cli.train import cli_main
from mmr1.plot import read_metrics


def main(argv: list[str]) -> int:
    return mmr1_main(["plot", *argv])

ROOT = Path(__file__).resolve().parents[2]


def test_plot_renders_loss_lr_and_validation_curves(tmp_path, capsys):
    logger = '[{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "%s"}}]' % tmp_path
    with mock.patch.object(sys, "argv", ["mmr1"]):
        cli_main(["fit", "--config", str(ROOT / "configs" / "tiny_contrastive.yaml"), "--trainer.max_steps", "3",
                  "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "1",
                  "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
                  "--trainer.default_root_dir", str(tmp_path), f"--trainer.logger={logger}",
                  "--checkpoint.dirpath", str(tmp_path / "checkpoints"), "--data.init_args.batch_size", "4"])
    series = read_metrics(tmp_path)
    assert [step for step, _ in series["train/loss"]] == [0, 1, 2]
    assert main([str(tmp_path), "--out", str(tmp_path / "png")]) == 0
    written = {Path(word).name for word in capsys.readouterr().out.split() if word.endswith(".png")}
    assert {"train.png", "val.png", "lr.png"} <= written
    for name in written:
        assert Image.open(tmp_path / "png" / name).size == (700, 400)


def test_plot_without_metrics_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no metrics.csv"):
        read_metrics(tmp_path)
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"mmr1 plot: {tmp_path}: no metrics.csv (log with lightning.pytorch.loggers." \
                                      "CSVLogger)\n"
    assert main([str(tmp_path / "missing")]) == 2
    assert "missing: no such run folder" in capsys.readouterr().err and not (tmp_path / "missing").exists()
    (tmp_path / "metrics.csv").write_text("epoch,train/loss\n0,1.5\n")  # no step column
    assert main([str(tmp_path)]) == 2
    assert "metrics.csv:2: expected CSVLogger rows with a step column" in capsys.readouterr().err
