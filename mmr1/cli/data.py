"""`mmr1 data synth|digits|arithmetic|check|tokenizer|convert`: make, validate, tokenize and convert datasets
(the logic: `mmr1.datamodules`)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from mmr1.cli.common import parser_for
from mmr1.config import PRESETS, Config
from mmr1.datamodules.records import OBJECTIVES, TEXT_FIELDS


def main(argv: list[str]) -> int:
    """`mmr1 data`:

    mmr1 data synth --out data/synth --n 200        synthetic image + audio reasoning records
    mmr1 data check train.jsonl --objective sft     validate a manifest exactly as training will
    """
    args = _parser().parse_args(argv)
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = parser_for(main, "data")
    commands = parser.add_subparsers(dest="command", required=True,
                                     metavar="synth|digits|arithmetic|check|tokenizer|convert")

    synth = commands.add_parser("synth", help="write synthetic reasoning records (JSONL + PNG + WAV)")
    synth.add_argument("--out", required=True, type=Path, help="output folder")
    synth.add_argument("--n", required=True, type=int, help="number of records")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--split", choices=("train", "val", "test"), default="train")
    synth.add_argument("--difficulty", type=int, choices=(0, 1, 2, 3), default=None,
                       help="default: mixed 1-3; 0: one shape or one beep, named (a perception curriculum)")
    synth.add_argument("--image-size", type=int, default=32)
    synth.set_defaults(run=_synth)

    check = commands.add_parser("check", help="validate a manifest exactly as training will: JSON, fields, "
                                               "files, decoding, finite media, durations, token lengths")
    check.add_argument("manifest", type=Path)
    check.add_argument("--objective", choices=OBJECTIVES, default=None,
                       help="check the fields and lengths it needs (default: sft for question + answer records, "
                            "preference for chosen + rejected, else masked; no fields required)")
    model = check.add_mutually_exclusive_group()
    model.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="the model to check for")
    model.add_argument("--checkpoint", type=Path, help="a checkpoint folder: its config and tokenizer")
    check.add_argument("--max-length", type=int, default=None,
                       help="the training's data.max_length (default: what the core takes beside the prefix)")
    check.set_defaults(run=_check)

    digits = commands.add_parser("digits", help="the real-data task: a handwritten digit (scikit-learn) + a spoken "
                                 "digit (FSDD) + a question that needs both; one speaker held out for test")
    digits.add_argument("--out", required=True, type=Path, help="output folder (PNGs + train/val/test.jsonl)")
    digits.add_argument("--fsdd", required=True, type=Path, help="the Free Spoken Digit Dataset folder")
    digits.add_argument("--test-speaker", default="theo", help="the speaker held out for the test split")
    digits.add_argument("--train", type=int, default=6000, help="training records")
    digits.add_argument("--val", type=int, default=400, help="selection records (training speakers' held-out takes)")
    digits.add_argument("--test", type=int, default=500, help="test records")
    digits.add_argument("--seed", type=int, default=0)
    digits.set_defaults(run=_digits)

    arithmetic = commands.add_parser("arithmetic", help="grade-school arithmetic text records (a ± b, a × b) with "
                                     "place-value reasoning; no problem in two splits")
    arithmetic.add_argument("--out", required=True, type=Path, help="output folder (train/val/test.jsonl)")
    arithmetic.add_argument("--train", type=int, default=1000, help="training problems")
    arithmetic.add_argument("--val", type=int, default=200, help="selection problems")
    arithmetic.add_argument("--test", type=int, default=200, help="test problems")
    arithmetic.add_argument("--seed", type=int, default=0)
    arithmetic.set_defaults(run=_arithmetic)

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
    convert.add_argument("--shortest", type=int, default=None, metavar="N",
                         help="keep only the N problems with the shortest question + solution (CPU-sized runs)")
    convert.set_defaults(run=_convert)
    return parser


def _synth(args: argparse.Namespace) -> int:
    from mmr1.datamodules.synth import write

    path = write(args.out, args.n, args.seed, args.split, args.difficulty, args.image_size)
    print(f"wrote {args.n} {args.split} records to {path}")
    return 0


def _digits(args: argparse.Namespace) -> int:
    from mmr1.datamodules.digits import write

    paths = write(args.out, args.fsdd, args.test_speaker, {"train": args.train, "val": args.val, "test": args.test},
                  args.seed)
    print(f"wrote {', '.join(str(p) for p in paths.values())} (test speaker {args.test_speaker})")
    return 0


def _arithmetic(args: argparse.Namespace) -> int:
    from mmr1.datamodules.arithmetic import write

    paths = write(args.out, {"train": args.train, "val": args.val, "test": args.test}, args.seed)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from mmr1.datamodules.manifest import BadRecord, ManifestDataset
    from mmr1.datamodules.records import RecordProcessor

    config = Config.from_checkpoint(args.checkpoint) if args.checkpoint else Config.from_name(args.preset)
    dataset = ManifestDataset(args.manifest, RecordProcessor.from_config(config), args.objective,
                              skip_bad_records=True, encode=_encoder(args, config))
    failures = list(dataset.skipped)
    fields, answers, seconds = Counter(), Counter(), []
    for index, (line, record) in enumerate(dataset.records):
        try:
            example = dataset.example(index)  # exactly what a training item goes through
        except BadRecord as e:
            failures.append((line, e.reason))
            continue
        fields.update(key for key in TEXT_FIELDS + ("choices",) if record.get(key) is not None)
        fields[_modalities(record)] += 1
        if record.get("answer") is not None:
            answers[record["answer"]] += 1
        if example["audio_values"] is not None:
            seconds.append(len(example["audio_values"]) / dataset.processors.audio.sample_rate)
    total = len(dataset.records) + len(dataset.skipped)
    _print_summary(args.manifest, total, fields, answers, seconds, sorted(failures))
    return 1 if failures else 0


def _encoder(args: argparse.Namespace, config: Config) -> Callable[[dict], dict]:
    """`Collator.encode` of the collator training builds for this model: for --objective, else for the
    objective each record's fields serve."""
    from mmr1.datamodules.collate import Collator

    collators: dict[str, Collator] = {}

    def encode(example: dict) -> dict:
        objective = args.objective or _objective_of(example)
        if objective not in collators:
            collators[objective] = Collator.for_model(config, objective, args.checkpoint, max_length=args.max_length)
        return collators[objective].encode(example)

    return encode


def _objective_of(example: dict) -> str:
    if example.get("question") and example.get("answer") is not None:
        return "sft"
    if example.get("question") and example.get("chosen") and example.get("rejected"):
        return "preference"
    return "masked"


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

    n = convert(args.source, args.out, args.split, args.shortest)
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
