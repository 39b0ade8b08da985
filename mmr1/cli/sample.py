"""`mmr1 sample`: rejection sampling into an SFT manifest (the logic: `mmr1.rl.rejection`)."""

from __future__ import annotations

from pathlib import Path

from mmr1.cli.common import MAX_NEW_TOKENS, parser_for


def main(argv: list[str]) -> int:
    """`mmr1 sample`:

    mmr1 sample --checkpoint F --manifest rl.jsonl --n 8 --min-reward 1 --out sft.jsonl [--rewards accuracy=1,format=1]
    mmr1 sample --checkpoint F --synth-n 64 --out sft.jsonl          the built-in synthetic records
    """
    parser = parser_for(main, "sample")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint folder or a Lightning .ckpt")
    parser.add_argument("--manifest", type=Path, help="RL records (question + answer + media); default: synthetic")
    parser.add_argument("--synth-n", type=int, default=64, help="without --manifest: synthetic records to sample")
    parser.add_argument("--out", type=Path, required=True, help="the SFT manifest to write (JSONL)")
    parser.add_argument("--n", type=int, default=8, help="responses sampled per record")
    parser.add_argument("--min-reward", type=float, default=1.0, help="keep responses whose total reward is >= this")
    parser.add_argument("--rewards", help="NAME=WEIGHT,… (default accuracy=1,format=0.5)")
    parser.add_argument("--max-per-record", type=int, default=1,
                        help="distinct kept responses written per record; 0 = all")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=4, help="records per sampling batch (x n sequences)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, …")
    parser.add_argument("--summary", type=Path, help="also write the counts here (JSON)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    from mmr1.rl.rejection import rejection_sample

    counts = rejection_sample(args.checkpoint, args.out, args.manifest, args.n, args.min_reward,
                              parse_rewards(args.rewards) if args.rewards is not None else None,
                              args.max_new_tokens, args.temperature, args.top_p, args.batch_size,
                              args.max_per_record, args.synth_n, args.seed, args.device, args.summary,
                              progress=not args.no_progress)
    print(f"sampled {counts['samples']} responses for {counts['records']} records; kept {counts['kept']} "
          f"(keep rate {counts['keep_rate']:.1%}) from {counts['records_kept']} records; wrote {counts['written']} "
          f"SFT records to {args.out}")
    return 0


def parse_rewards(text: str) -> dict[str, float]:
    """'accuracy=1,format=0.5' -> {'accuracy': 1.0, 'format': 0.5}."""
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.rpartition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if weight is None or not name.strip():
            raise ValueError(f"--rewards: expected NAME=WEIGHT pairs like 'accuracy=1,format=0.5', got {item!r}")
        weights[name.strip()] = weight
    return weights
