"""What every command shares: the parser whose usage errors are bad input, and the common options."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

# what a command raises for bad input; `mmr1.cli.main` prints it as one line and exits 2
BAD_INPUT = (ValueError, OSError)


class UsageError(ValueError):
    """A command line argparse refused (a missing, unknown or malformed option)."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors raise UsageError (one line, via `mmr1.cli.main`) instead of printing usage."""

    def error(self, message: str):
        raise UsageError(message)


def parser_for(handler: Callable, name: str) -> Parser:
    """The parser of `mmr1 NAME`: described by its help line in the command table, with the handler's
    docstring (its usage examples) below the options."""
    from mmr1.cli import COMMANDS

    return Parser(prog=f"mmr1 {name}", description=COMMANDS[name][1], epilog=handler.__doc__,
                  formatter_class=argparse.RawDescriptionHelpFormatter)


def one_line(error: BaseException) -> str:
    """The error's message with its whitespace (newlines too) collapsed to single spaces."""
    return " ".join(str(error).split()) or type(error).__name__


def checkpoint_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", "--ckpt", "--ckpt_path", dest="checkpoint", type=Path, required=True,
                        help="a checkpoint folder or a Lightning .ckpt")
    parser.add_argument("--config", type=Path, help="config.json for a .ckpt (default: beside it, or stored in it)")


MAX_NEW_TOKENS = 128  # every command's default decoding budget; the built-in responses need up to 78 tokens


def generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--stop", action="append", default=[], help="stop at this string (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def generation(args: argparse.Namespace) -> dict:
    """The generation options of `generation_args` (the RNG seeded with --seed)."""
    import torch

    torch.manual_seed(args.seed)
    return {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample, "temperature": args.temperature,
            "top_k": args.top_k, "top_p": args.top_p, "stop": args.stop}
