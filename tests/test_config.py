"""Config readers: every folder mmr1 writes is read by Config.from_checkpoint, Config.from_file and `mmr1 info`."""

import pytest
import torch

from mmr1.checkpoint import export
from mmr1.cli import main
from mmr1.config import Config
from mmr1.core import ReasoningCore


@pytest.fixture(scope="module")
def folders(tiny_checkpoint, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("folders")
    int8, _ = export(tiny_checkpoint, root / "int8", quantize="int8")
    core = ReasoningCore(Config.from_name("tiny").core).save_pretrained(root / "core")
    ckpt = root / "last.ckpt"
    torch.save({"mmr1_config": Config.from_name("tiny").to_dict(), "state_dict": {}}, ckpt)
    return {"init": tiny_checkpoint, "int8": int8, "core": core, "ckpt": ckpt}


@pytest.mark.parametrize("kind", ["init", "int8", "core", "ckpt"])
def test_the_three_readers_accept_the_packages_folders(folders, kind, capsys):
    path = folders[kind]
    config = Config.from_checkpoint(path)
    if kind != "ckpt":
        assert Config.from_file(path / "config.json") == config
    assert main(["info", "--checkpoint", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{config.name}: ")


def test_an_unknown_architecture_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"architecture": "Other"}')
    with pytest.raises(ValueError, match="architecture is 'Other'; expected 'MultimodalModel' or 'ReasoningCore'"):
        Config.from_checkpoint(tmp_path)
