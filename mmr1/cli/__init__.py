"""The `mmr1` command (also `python -m mmr1`): one table of commands, one error policy.

    mmr1 init --preset tiny --out runs/tiny        build a model + tokenizer, save a checkpoint folder
    mmr1 fit --config configs/tiny_sft.yaml [--trainer.max_steps 50 --trainer.default_root_dir D]
    mmr1 pipeline --config configs/r1_tiny.yaml     the R1 recipe: SFT -> GRPO -> rejection sampling -> …
    mmr1 qa --checkpoint F --sample                 ask a checkpoint about an image and a sound
    mmr1 COMMAND --help                             the options of one command

Bad input ends with one line on stderr naming what was wrong and what was expected, and exit
status 2; `--debug` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable, Optional

from mmr1.cli.common import BAD_INPUT, one_line

# name -> (handler "module:function" under mmr1.cli, taking the argv after the name and returning the exit
# status; one-line help). Handlers are imported when run, so `mmr1 qa` never imports Lightning.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("model:init", "build an untrained model from a preset and save it as a checkpoint folder"),
    "import": ("model:import_pretrained", "a pretrained Llama/Qwen2 model (GGUF or Hugging Face) as a checkpoint "
                                          "folder"),
    "info": ("model:info", "parameter counts per component of a preset or a checkpoint"),
    "data": ("data:main", "make, validate, tokenize and convert datasets (synth, digits, check, tokenizer, convert)"),
    "fit": ("train:fit", "train an objective (LightningCLI: --config configs/X.yaml, --trainer.* overrides)"),
    "validate": ("train:validate", "validate an objective on its datamodule's validation set (LightningCLI)"),
    "test": ("train:test", "test an objective on its datamodule's test set (LightningCLI)"),
    "predict": ("infer:predict", "answer every record of a manifest: JSONL of id, reasoning, answer, …"),
    "pipeline": ("pipeline:main", "run the multi-stage R1 recipe: SFT -> GRPO -> rejection sampling -> …"),
    "sample": ("sample:main", "rejection sampling: a checkpoint's rewarded responses as an SFT manifest"),
    "qa": ("infer:qa", "answer questions about images and sounds"),
    "eval": ("infer:evaluate", "score a model on a manifest (accuracy, format rate, F1, …) or on plain text"),
    "demo": ("infer:demo", "serve a Gradio page on 127.0.0.1 to ask a checkpoint about an image and a sound"),
    "export": ("model:export", "write a checkpoint folder from a .ckpt or a folder, optionally pruned and/or int8"),
    "plot": ("plot:main", "a run's logged curves (metrics.csv) as PNGs"),
}


def main(argv: Optional[list[str]] = None) -> int:
    """Run one command; returns its exit status (2 for bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    try:
        if name not in COMMANDS:
            raise ValueError(f"unknown command {name!r}; expected one of: {', '.join(COMMANDS)}")
        return handler(name)(rest)
    except BrokenPipeError:  # the reader stopped early (`| head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 1
    except BAD_INPUT as e:
        if debug:
            raise
        print(f"mmr1 {name}: {one_line(e)}", file=sys.stderr)
        return 2


def handler(name: str) -> Callable[[list[str]], int]:
    """The function that runs command `name`."""
    module, _, function = COMMANDS[name][0].partition(":")
    return getattr(importlib.import_module(f"mmr1.cli.{module}"), function)


def usage() -> str:
    """The command list: every entry of COMMANDS with its help line."""
    lines = [__doc__.splitlines()[0], "", "usage: mmr1 COMMAND [options] [--debug]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}}  {help}" for name, (_, help) in COMMANDS.items()]
    return "\n".join(lines + [""] + __doc__.splitlines()[2:])


if __name__ == "__main__":
    sys.exit(main())
