"""The command table: `mmr1 --help` lists every command; bad input to any command is one line and exit 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from mmr1.cli import COMMANDS, handler, main


def test_help_lists_every_command_and_every_handler_exists():
    out = subprocess.run([sys.executable, "-m", "mmr1", "--help"], check=True, capture_output=True, text=True).stdout
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.split()]
    for name in ("fit", "validate", "test", "predict", "data", "plot", "pipeline", "qa", "eval", "export", "info",
                 "import", "sample", "init", "demo"):
        assert name in listed, name
        assert callable(handler(name))
    assert set(COMMANDS) <= set(listed)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_an_unknown_option_is_one_line_and_exit_2(name, capsys):
    argv = [name, "data"] if name == "data" else [name]  # `data` needs a subcommand before its options
    assert main([*argv, "--no-such-option", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mmr1 {name}: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("argv, message", [
    (["bogus"], "unknown command 'bogus'; expected one of: init, import"),
    (["info", "--checkpoint", "{tmp}/missing"], "missing: no config.json; expected a folder"),
    (["qa", "--checkpoint", "{tmp}/missing", "--question", "Why?"], "missing: no such checkpoint folder"),
    (["export", "--checkpoint", "{tmp}/missing", "--out", "{tmp}/out", "--quantize", "int4"],
     "argument --quantize: invalid choice: 'int4'"),
    (["plot", "{tmp}"], "no metrics.csv"),
    (["pipeline", "--config", "{tmp}/missing.yaml"], "missing.yaml"),
    (["fit", "--config", "{tmp}/missing.yaml"], "missing.yaml"),
    (["fit", "--config", "configs/tiny_sft.yaml", "--trainer.max_steps", "abc"],
     "Parser key \"trainer.max_steps\": Expected a <class 'int'>. Got value: abc"),
    (["fit", "--config", "configs/tiny_sft.yaml", "--model.init_args.init_from", "{tmp}/missing"],
     "init_from: cannot load"),
])
def test_bad_input_names_the_thing_in_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["info", "--checkpoint", str(tmp_path / "missing"), "--debug"])


def test_a_damaged_checkpoint_folder_is_one_line(tiny_checkpoint, tmp_path, capsys):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_checkpoint, damaged)
    (damaged / "model.safetensors").write_bytes(b"\x00" * 10)
    assert main(["qa", "--checkpoint", str(damaged), "--question", "Why?"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.safetensors: damaged or truncated" in err, err
