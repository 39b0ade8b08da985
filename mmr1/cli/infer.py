"""The inference commands: `mmr1 qa`, `mmr1 eval`, `mmr1 demo`.

`--checkpoint` is a checkpoint folder (e.g. `runs/x/export`) or a Lightning `.ckpt`
(its config: `--config config.json`, else config.json beside it, else the one stored in it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mmr1.cli.common import MAX_NEW_TOKENS, checkpoint_args, generation, generation_args, parser_for


def qa(argv: list[str]) -> int:
    """`mmr1 qa`:

    mmr1 qa --checkpoint F --question "…" [--image F] [--audio F] [--json] [--stop S]
    mmr1 qa --checkpoint F --sample                                 a built-in image+audio question
    mmr1 qa --checkpoint F --manifest test.jsonl --output preds.jsonl [--batch-size 8]
    """
    parser = parser_for(qa, "qa")
    checkpoint_args(parser)
    parser.add_argument("--question")
    parser.add_argument("--image", type=Path)
    parser.add_argument("--audio", type=Path)
    parser.add_argument("--sample", action="store_true", help="ask a built-in synthetic image+audio question")
    parser.add_argument("--manifest", type=Path, help="answer every record of a JSONL manifest")
    parser.add_argument("--output", type=Path, help="with --manifest: write predictions here (JSONL)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    generation_args(parser)
    return run_qa(parser.parse_args(argv))


def evaluate(argv: list[str]) -> int:
    """`mmr1 eval`:

    mmr1 eval --checkpoint F --manifest test.jsonl [--output preds.jsonl] [--samples k] [--withhold image]
    mmr1 eval --checkpoint F --text corpus.txt                      perplexity of plain text (.txt or .jsonl)
    """
    parser = parser_for(evaluate, "eval")
    checkpoint_args(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", type=Path)
    source.add_argument("--text", type=Path, help="perplexity of a .txt (blank-line documents) or .jsonl file")
    parser.add_argument("--output", type=Path, help="write the greedy predictions here (JSONL)")
    parser.add_argument("--samples", type=int, default=0,
                        help="k > 0: also sample k answers per question for pass@1, pass@k and maj@k (the majority "
                        "answer's accuracy)")
    parser.add_argument("--withhold", nargs="+", choices=("image", "audio"), default=(),
                        help="answer without these media (what the model gets from each)")
    generation_args(parser)
    return run_eval(parser.parse_args(argv))


def predict(argv: list[str]) -> int:
    """`mmr1 predict`: one JSON line per manifest record (id, question, reference, answer, reasoning, text, correct):

    mmr1 predict --checkpoint runs/x/export --manifest test.jsonl --output preds.jsonl
    mmr1 predict --ckpt_path runs/x/checkpoints/last.ckpt --manifest test.jsonl       lines on stdout
    """
    parser = parser_for(predict, "predict")
    checkpoint_args(parser)
    parser.add_argument("--manifest", type=Path, required=True, help="the JSONL records to answer")
    parser.add_argument("--output", type=Path, help="the predictions file (JSONL); default: stdout")
    generation_args(parser)
    args = parser.parse_args(argv)
    args.question = args.image = args.audio = None
    args.sample = False
    return _qa_manifest(args)


def demo(argv: list[str]) -> int:
    """`mmr1 demo`."""
    parser = parser_for(demo, "demo")
    checkpoint_args(parser)
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    args = parser.parse_args(argv)
    from mmr1.demo import serve

    serve(args.checkpoint, args.config, port=args.port, max_new_tokens=args.max_new_tokens)
    return 0


def run_qa(args) -> int:
    from mmr1.inference import load

    if args.manifest is not None:
        return _qa_manifest(args)
    if args.output is not None:
        raise ValueError("--output: only with --manifest")
    for flag, path in (("--image", args.image), ("--audio", args.audio)):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{flag}: {path}: no such file")
    qa = load(args.checkpoint, args.config)
    question, image, audio, rate, expected = args.question, args.image, args.audio, None, None
    if args.sample:
        from mmr1.datamodules.synth import Synth

        if qa.model.config.vision is None or qa.model.config.audio is None:
            raise ValueError("--sample: the built-in question needs a model with image and audio")
        record = Synth(seed=0, split="test", image_size=qa.model.config.vision.image_size).record(0)
        question, image, audio, expected = record["question"], record["image"], record["audio"], record["answer"]
        rate = record["sample_rate"]
    if not question:
        raise ValueError("--question: give a question, --sample for a built-in one, or --manifest")
    start = time.perf_counter()
    result = qa(question, image=image, audio=audio, sample_rate=rate, **generation(args))
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({"question": question, "answer": result.answer, "reasoning": result.reasoning,
                          "text": result.text, "expected": expected, "seconds": round(seconds, 3),
                          "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens}))
        return 0
    print(f"question : {question}")
    print(f"reasoning: {result.reasoning}")
    print(f"answer   : {result.answer}" + (f"   (expected {expected})" if expected is not None else ""))
    print(f"generated {result.completion_tokens} tokens in {seconds:.2f} s: {result.text!r}")
    return 0


def _qa_manifest(args) -> int:
    from mmr1.evaluate import prediction, write_predictions
    from mmr1.inference import answer_manifest, load

    if args.question or args.image or args.audio or args.sample:
        raise ValueError("--manifest: give either a manifest or --question/--image/--audio/--sample, not both")
    qa = load(args.checkpoint, args.config)
    start = time.perf_counter()
    rows = [prediction(record, result) for record, result in
            answer_manifest(qa, args.manifest, args.batch_size, not args.no_progress, **generation(args))]
    seconds = time.perf_counter() - start
    if args.output is not None:
        write_predictions(rows, args.output)
        print(f"answered {len(rows)} questions in {seconds:.1f} s ({len(rows) / seconds:.2f}/s) → {args.output}")
    else:
        for row in rows:
            print(json.dumps(row))
    return 0


def run_eval(args) -> int:
    from mmr1.evaluate import evaluate, text_perplexity
    from mmr1.checkpoint import load_model
    from mmr1.inference import load

    if args.text is not None:
        if args.output is not None or args.samples:
            raise ValueError("--text: scores perplexity only; --output and --samples need --manifest")
        model, tokenizer = load_model(args.checkpoint, args.config)
        print(json.dumps(text_perplexity(model.eval(), tokenizer, args.text, args.batch_size)))
        return 0
    qa = load(args.checkpoint, args.config)
    summary = evaluate(qa, args.manifest, args.batch_size, args.samples, args.output, not args.no_progress,
                       withhold=args.withhold, **generation(args))
    print(json.dumps(summary))
    return 0
