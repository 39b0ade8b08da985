"""What the learning benchmarks share: run `mmr1` commands exactly as a user types them, echoed."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
