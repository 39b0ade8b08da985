"""`mmr1 data synth|check|tokenizer|convert`: make, validate, tokenize and convert datasets."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Optional

from mmr1.config import PRESETS, Config
from mmr1.datamodules.records import OBJECTIVES, TEXT_FIELDS


def main(argv: Optional[list[str]] = None) -> int:
    """Run one `mmr1 data` command; `argv` is what follows `data`. Returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"mmr1 data {args.command}: {e}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmr1 data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write synthetic reasoning records (JSONL + PNG + WAV)")
    synth.add_argument("--out", required=True, type=Path, help="output folder")
    synth.add_argument("--n", required=True, type=int, help="number of records")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--split", choices=("train", "val", "test"), default="train")
    synth.add_argument("--difficulty", type=int, choices=(1, 2, 3), default=None, help="default: mixed")
    synth.add_argument("--image-size", type=int, default=32)
    synth.set_defaults(run=_synth)

    check = commands.add_parser("check", help="validate a manifest: JSON, fields, files, decoding, durations")
    check.add_argument("manifest", type=Path)
    check.add_argument("--objective", choices=OBJECTIVES, default=None, help="check the fields it needs")
    check.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model whose processors decode")
    check.set_defaults(run=_check)

    tokenizer = commands.add_parser("tokenizer", help="train a byte-level BPE tokenizer")
    tokenizer.add_argument("--corpus", required=True, nargs="+", type=Path, help="text files or JSONL manifests")
    tokenizer.add_argument("--vocab-size", type=int, default=512)
    tokenizer.add_argument("--out", required=True, type=Path)
    tokenizer.set_defaults(run=_tokenizer)

    convert = commands.add_parser("convert", help="convert a public dataset to an mmr1 manifest")
    convert.add_argument("dataset", choices=("gsm8k",))
    convert.add_argument("--in", dest="source", metavar="FILE", required=True, type=Path,
                         help="the dataset's JSONL file")
    convert.add_argument("--out", required=True, type=Path, help="the manifest to write")
    convert.add_argument("--split", default=None, help="split name in record ids (default: the input's stem)")
    convert.set_defaults(run=_convert)
    return parser


def _synth(args: argparse.Namespace) -> int:
    from mmr1.datamodules.synth import write

    path = write(args.out, args.n, args.seed, args.split, args.difficulty, args.image_size)
    print(f"wrote {args.n} {args.split} records to {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from mmr1.datamodules.manifest import read_manifest
    from mmr1.datamodules.records import RecordProcessor

    records, failures = read_manifest(args.manifest, args.objective, skip_bad_records=True)
    total = len(records) + len(failures)
    processors = RecordProcessor.from_config(Config.from_name(args.preset))
    fields, answers, seconds = Counter(), Counter(), []
    for line, record in records:
        try:
            example = processors(record, args.manifest.parent)
        except ValueError as e:
            failures.append((line, str(e)))
            continue
        fields.update(key for key in TEXT_FIELDS + ("choices",) if record.get(key) is not None)
        fields[_modalities(record)] += 1
        if record.get("answer") is not None:
            answers[record["answer"]] += 1
        if example["audio_values"] is not None:
            seconds.append(len(example["audio_values"]) / processors.audio.sample_rate)
    _print_summary(args.manifest, total, fields, answers, seconds, sorted(failures))
    return 1 if failures else 0


def _modalities(record: dict) -> str:
    present = [m for m in ("image", "audio") if record.get(m) is not None]
    if any(record.get(k) for k in ("question", "text", "caption")):
        present.append("text")
    return "media: " + ("+".join(present) or "none")


def _print_summary(path: Path, total: int, fields: Counter, answers: Counter, seconds: list[float],
                   failures: list[tuple[int, str]]) -> None:
    print(f"{path}: {total} records, {total - len(failures)} ok, {len(failures)} failure(s)")
    print(f"{'field / modalities':<24}{'records':>8}")
    for name, count in sorted(fields.items()):
        print(f"{name:<24}{count:>8}")
    if seconds:
        print(f"audio seconds: min {min(seconds):.2f}, mean {sum(seconds) / len(seconds):.2f}, max {max(seconds):.2f}")
    if answers:
        print(f"answers ({len(answers)} distinct): "
              + ", ".join(f"{answer!r} {count}" for answer, count in answers.most_common(10)))
    for line, reason in failures:
        print(f"FAIL line {line}: {reason}")


def _tokenizer(args: argparse.Namespace) -> int:
    from mmr1.datamodules.tokenizer import Tokenizer

    tokenizer = Tokenizer.train(_corpus_texts(args.corpus), args.vocab_size)
    tokenizer.save(args.out)
    print(f"trained {len(tokenizer)} tokens; saved to {args.out}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from mmr1.datamodules.gsm8k import convert

    n = convert(args.source, args.out, args.split)
    print(f"wrote {n} {args.dataset} records to {args.out}")
    return 0


def _corpus_texts(paths: Iterable[Path]) -> Iterator[str]:
    """Lines of text files; the text fields of JSONL manifests."""
    for path in paths:
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if path.suffix != ".jsonl":
                    yield line.rstrip("\n")
                    continue
                try:
                    record = json.loads(line) if line.strip() else {}
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({e})") from e
                yield from (record[k] for k in ("question", "reasoning", "answer", "caption", "text", "chosen",
                                                "rejected") if isinstance(record.get(k), str))
