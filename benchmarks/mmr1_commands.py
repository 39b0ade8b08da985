"""What the learning benchmarks share: run `mmr1` commands exactly as a user types them, echoed."""

from __future__ import annotations

import contextlib
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT.parent / "shared" / "data" / "fsdd"  # the Free Spoken Digit Dataset beside the repository


def run(args: list[str]) -> str:
    """Run one mmr1 command (echoed) in the repository root, return its stdout; stop with its stderr tail when
    it fails. The command runs in this process through the CLI's own entry point (`mmr1.cli.main`, what the
    `mmr1` script calls), so a benchmark pays the ~12 s of importing torch and Lightning once, not per command."""
    from mmr1.cli import main

    print("$ mmr1 " + " ".join(args), flush=True)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.chdir(ROOT), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(list(args))
    if status:
        sys.exit(f"mmr1 {args[0]} failed ({status}):\n{stderr.getvalue()[-3000:]}")
    return stdout.getvalue()


def exported(stdout: str, command: str) -> str:
    """The folder of the last 'exported FOLDER' line `mmr1 fit` printed; stop when there is none."""
    folders = [line.removeprefix("exported ") for line in stdout.splitlines() if line.startswith("exported ")]
    if not folders:
        sys.exit(f"{command}: no 'exported FOLDER' line in its output")
    return folders[-1]


def manifests(data: Path) -> list[str]:
    """The data arguments of a stage that reads manifests: the task's train and val manifests."""
    return ["--data.init_args.train_manifest", str(data / "train.jsonl"),
            "--data.init_args.val_manifest", str(data / "val.jsonl")]


def tokenized(data: Path, tokenizer: str) -> list[str]:
    """The data arguments of a stage: the task's manifests, in the vocabulary of the model it starts from."""
    return manifests(data) + ["--data.init_args.tokenizer", tokenizer]


def fit(config: str, out: Path, data_args: list[str], steps: int | None, init_from: str | None,
        val_every: int | None) -> tuple[str, float]:
    """Train one stage under `out`; (its export folder, minutes)."""
    args = ["fit", "--config", config, "--trainer.default_root_dir", str(out),
            "--trainer.enable_progress_bar", "false", *data_args]
    if steps is not None:
        args += ["--trainer.max_steps", str(steps)]
    if init_from is not None:
        args += ["--model.init_args.init_from", init_from]
    if val_every is not None:
        args += ["--trainer.val_check_interval", str(val_every)]
    start = time.perf_counter()
    stdout = run(args)
    return exported(stdout, f"mmr1 fit --config {config}"), (time.perf_counter() - start) / 60
