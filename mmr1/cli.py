"""The `mmr1` command (also `python -m mmr1`).

    mmr1 fit|validate|test|predict --config configs/tiny_sft.yaml [--trainer.max_steps 50 …]   (LightningCLI)
    mmr1 pipeline --config configs/r1_tiny.yaml     the R1 recipe: SFT -> GRPO -> rejection sampling -> …
    mmr1 sample --checkpoint F [--manifest M | --synth-n N] --n 8 --min-reward R --out OUT.jsonl   rejection sampling
    mmr1 init --preset tiny --out runs/tiny        build a model + tokenizer, save a checkpoint folder
    mmr1 import --gguf [FILE] | --hf FOLDER --out F  a pretrained Llama/Qwen2 LM as a checkpoint folder
    mmr1 info --preset tiny                        parameter counts per component
    mmr1 qa|eval|demo|export …                     inference (see mmr1.commands_infer)
    mmr1 data synth|check|tokenizer|convert …      datasets (see `mmr1 data --help`)
    mmr1 plot RUN_DIR                              the logged curves of a run, as PNGs

Errors print one line and exit non-zero; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("fit", "validate", "test", "predict"):
        from mmr1.training import cli_main

        cli_main(argv)
        return 0
    if argv and argv[0] == "plot":
        from mmr1.plot import main as plot_main

        return plot_main(argv[1:])
    if argv and argv[0] == "data":
        from mmr1.datamodules.commands import main as data_main

        return data_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"mmr1 {args.command}: {e}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmr1", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    commands = parser.add_subparsers(dest="command", required=True)
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", help="show tracebacks")

    init = commands.add_parser("init", parents=[debug], help="build a model from a preset and save it")
    init.add_argument("--preset", default="tiny")
    init.add_argument("--config", type=Path, help="a config.json instead of a preset")
    init.add_argument("--out", type=Path, required=True)
    init.add_argument("--seed", type=int, default=0)
    init.set_defaults(run=_init)

    from mmr1.pipeline import add_command as add_pipeline

    add_pipeline(commands, debug)
    from mmr1.sampling_cmd import add_command as add_sample

    add_sample(commands, debug)
    from mmr1.import_cmd import add_command as add_import

    add_import(commands, debug)

    info = commands.add_parser("info", parents=[debug], help="parameter counts of a preset or checkpoint")
    info.add_argument("--preset", default="tiny")
    info.add_argument("--checkpoint", type=Path)
    info.set_defaults(run=_info)

    from mmr1.commands_infer import add_commands as add_inference

    add_inference(commands, debug)
    return parser


def _init(args) -> int:
    import torch

    from mmr1.config import Config
    from mmr1.datamodules.tokenizer import Tokenizer
    from mmr1.model import MultimodalModel

    torch.manual_seed(args.seed)
    config = Config.from_file(args.config) if args.config else Config.from_name(args.preset)
    tokenizer = Tokenizer.default()
    if len(tokenizer) > config.core.vocab_size:
        raise ValueError(f"core.vocab_size={config.core.vocab_size} is smaller than the tokenizer's "
                         f"{len(tokenizer)} tokens")
    model = MultimodalModel(config)
    model.save_pretrained(args.out, tokenizer)
    print(f"saved an untrained {config.name} model ({_count(model) / 1e6:.2f}M parameters) to {args.out}")
    return 0


def _info(args) -> int:
    from mmr1.config import Config
    from mmr1.model import MultimodalModel

    config = Config.from_checkpoint(args.checkpoint) if args.checkpoint else Config.from_name(args.preset)
    model = MultimodalModel(config)
    print(f"{config.name}: {_count(model) / 1e6:.2f}M parameters")
    for name, child in model.named_children():
        print(f"  {name:<14} {_count(child) / 1e6:8.2f}M")
    return 0


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


if __name__ == "__main__":
    sys.exit(main())
