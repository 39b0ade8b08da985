"""What the learning benchmarks share: run `mmr1` commands exactly as a user types them, echoed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MMR1 = [sys.executable, "-m", "mmr1"]


def run(args: list[str]) -> str:
    """Run one mmr1 command (echoed) in the repository root, return its stdout; stop with its stderr tail when
    it fails."""
    print("$ mmr1 " + " ".join(args), flush=True)
    done = subprocess.run(MMR1 + args, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"mmr1 {args[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def exported(stdout: str, command: str) -> str:
    """The folder of the last 'exported FOLDER' line `mmr1 fit` printed; stop when there is none."""
    folders = [line.removeprefix("exported ") for line in stdout.splitlines() if line.startswith("exported ")]
    if not folders:
        sys.exit(f"{command}: no 'exported FOLDER' line in its output")
    return folders[-1]
