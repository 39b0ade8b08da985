"""The inference commands: `mmr1 qa`, `mmr1 eval`, `mmr1 demo`, `mmr1 export`.

    mmr1 qa --checkpoint F --question "…" [--image F] [--audio F] [--json] [--stop S]
    mmr1 qa --checkpoint F --sample                                 a built-in image+audio question
    mmr1 qa --checkpoint F --manifest test.jsonl --output preds.jsonl [--batch-size 8]
    mmr1 eval --checkpoint F --manifest test.jsonl [--output preds.jsonl] [--samples k]
    mmr1 eval --checkpoint F --text corpus.txt                      perplexity of plain text (.txt or .jsonl)
    mmr1 demo --checkpoint F [--port 7860]                           a Gradio page on 127.0.0.1
    mmr1 export --ckpt run/checkpoints/last.ckpt --out G [--quantize int8] [--prune 0.5]

`--checkpoint` is a checkpoint folder (e.g. `runs/x/export`) or a Lightning `.ckpt`
(its config: `--config config.json`, else config.json beside it, else the one stored in it).
Input errors raise ValueError/FileNotFoundError, which `mmr1.cli` prints as one line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_commands(subparsers, debug_parent: argparse.ArgumentParser) -> None:
    """Register qa, eval, demo and export, each with `set_defaults(run=fn)`."""
    qa = subparsers.add_parser("qa", parents=[debug_parent], help="answer questions about images and sounds")
    _checkpoint_args(qa)
    qa.add_argument("--question")
    qa.add_argument("--image", type=Path)
    qa.add_argument("--audio", type=Path)
    qa.add_argument("--sample", action="store_true", help="ask a built-in synthetic image+audio question")
    qa.add_argument("--manifest", type=Path, help="answer every record of a JSONL manifest")
    qa.add_argument("--output", type=Path, help="with --manifest: write predictions here (JSONL)")
    qa.add_argument("--json", action="store_true", help="print one JSON object")
    _generation_args(qa)
    qa.set_defaults(run=run_qa)

    ev = subparsers.add_parser("eval", parents=[debug_parent], help="score a model on a manifest or plain text")
    _checkpoint_args(ev)
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", type=Path)
    source.add_argument("--text", type=Path, help="perplexity of a .txt (blank-line documents) or .jsonl file")
    ev.add_argument("--output", type=Path, help="write the greedy predictions here (JSONL)")
    ev.add_argument("--samples", type=int, default=0, help="k > 0: also sample k answers per question for pass@k")
    ev.add_argument("--withhold", nargs="+", choices=("image", "audio"), default=(),
                    help="answer without these media (what the model gets from each)")
    _generation_args(ev)
    ev.set_defaults(run=run_eval)

    demo = subparsers.add_parser("demo", parents=[debug_parent], help="serve a Gradio page on 127.0.0.1")
    _checkpoint_args(demo)
    demo.add_argument("--port", type=int, default=7860)
    demo.add_argument("--max-new-tokens", type=int, default=128)
    demo.set_defaults(run=run_demo)

    export = subparsers.add_parser("export", parents=[debug_parent], help="write a (compressed) checkpoint folder")
    _checkpoint_args(export)
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--quantize", choices=("int8",), help="quantize Linear layers to int8 on load")
    export.add_argument("--prune", type=float, help="fraction of Linear weights to zero by magnitude, e.g. 0.5")
    export.set_defaults(run=run_export)


def _checkpoint_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", "--ckpt", dest="checkpoint", type=Path, required=True,
                        help="a checkpoint folder or a Lightning .ckpt")
    parser.add_argument("--config", type=Path, help="config.json for a .ckpt (default: beside it, or stored in it)")


def _generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--stop", action="append", default=[], help="stop at this string (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _generation(args) -> dict:
    import torch

    torch.manual_seed(args.seed)
    return {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample, "temperature": args.temperature,
            "top_k": args.top_k, "top_p": args.top_p, "stop": args.stop}


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
    result = qa(question, image=image, audio=audio, sample_rate=rate, **_generation(args))
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
            answer_manifest(qa, args.manifest, args.batch_size, not args.no_progress, **_generation(args))]
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
    from mmr1.inference import load, load_model

    if args.text is not None:
        if args.output is not None or args.samples:
            raise ValueError("--text: scores perplexity only; --output and --samples need --manifest")
        model, tokenizer = load_model(args.checkpoint, args.config)
        print(json.dumps(text_perplexity(model.eval(), tokenizer, args.text, args.batch_size)))
        return 0
    qa = load(args.checkpoint, args.config)
    summary = evaluate(qa, args.manifest, args.batch_size, args.samples, args.output, not args.no_progress,
                       withhold=args.withhold, **_generation(args))
    print(json.dumps(summary))
    return 0


def run_demo(args) -> int:
    from mmr1.demo import serve

    serve(args.checkpoint, args.config, port=args.port, max_new_tokens=args.max_new_tokens)
    return 0


def run_export(args) -> int:
    from mmr1.compress import export_quantized

    folder, report = export_quantized(args.checkpoint, args.out, args.quantize, args.prune, args.config)
    print(f"wrote {folder}: sparsity {report.sparsity:.3f}, loaded size {report.size_mb:.2f} MB"
          + (f" ({args.quantize})" if args.quantize else ""))
    return 0
