"""Rejection sampling, the R1 step between the RL stages (`mmr1 sample`).

    mmr1 sample --checkpoint F --manifest rl.jsonl --n 8 --min-reward 1 --out sft.jsonl [--rewards accuracy=1,format=1]
    mmr1 sample --checkpoint F --synth-n 64 --out sft.jsonl          the built-in synthetic records

Each record (question + answer + media) gets n sampled responses; a response is kept when its
total reward reaches --min-reward and it is well-formed (<think>…</think><answer>…</answer>, a
non-empty answer). Kept responses become SFT records: the original fields with `reasoning` and
`answer` from the response, media paths relative to the output's folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional

import torch

from mmr1.datamodules.prompt import parse_response
from mmr1.rl.rewards import Rewards
from mmr1.rl.rollout import decode_completions, sample_groups


def passing(texts: list[str], totals: list[float], min_reward: float) -> list[tuple[str, str]]:
    """(reasoning, answer) of each response reaching min_reward that is well-formed with a non-empty reasoning
    and answer (an empty <think></think> would teach the SFT stage not to think)."""
    parsed = [parse_response(text) for text in texts]
    return [(r, a) for (r, a), total in zip(parsed, totals) if total >= min_reward and r and a]


def relocated(record: dict, root: Path, out_dir: Path) -> dict:
    """The record with its media paths (relative to `root`) made relative to `out_dir`."""
    record = dict(record)
    for key in ("image", "audio"):
        if isinstance(record.get(key), str):
            record[key] = os.path.relpath((root / record[key]).resolve(), out_dir.resolve())
    return record


def rejection_sample(checkpoint: str | Path, out: str | Path, manifest: Optional[str | Path] = None, n: int = 8,
                     min_reward: float = 1.0, rewards: Optional[Mapping[str, float]] = None,
                     max_new_tokens: int = 64, temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 4,
                     max_per_record: int = 1, synth_n: int = 64, seed: int = 0, device: str = "auto",
                     summary: Optional[str | Path] = None, progress: bool = False) -> dict:
    """Sample, filter and write the SFT manifest `out`; returns (and writes to `summary`) the counts.

    Without `manifest`, `synth_n` synthetic records are first written beside `out` (folder `<stem>_synth`).
    Up to `max_per_record` distinct kept responses per record are written (0 = all of them)."""
    from tqdm import tqdm

    from mmr1.datamodules.collate import Collator
    from mmr1.datamodules.manifest import read_manifest
    from mmr1.datamodules.records import RecordProcessor
    from mmr1.checkpoint import load_model

    if n < 1 or batch_size < 1 or max_per_record < 0:
        raise ValueError(f"n and batch_size must be >= 1, max_per_record >= 0; got {n}, {batch_size}, {max_per_record}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model(checkpoint)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    if manifest is None:
        from mmr1.datamodules.synth import image_size_for, write

        manifest = write(out.parent / f"{out.stem}_synth", synth_n, seed, "train",
                         image_size=image_size_for(model.config))
    manifest = Path(manifest)
    records = [record for _, record in read_manifest(manifest, "rl")[0]]
    processors, collate = RecordProcessor.from_config(model.config), Collator(
        tokenizer, "rl", encode_text=model.config.text is not None)
    scorer = Rewards(rewards or {"accuracy": 1.0, "format": 0.5})
    generator = torch.Generator(device).manual_seed(seed)
    kept = written = records_kept = 0
    with out.open("w", encoding="utf-8") as f, tqdm(total=len(records), desc="sampling", unit="record",
                                                    disable=not progress) as bar:
        for start in range(0, len(records), batch_size):
            chunk = records[start:start + batch_size]
            batch = collate([processors(record, manifest.parent) for record in chunk])
            batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
            rollout = sample_groups(model, batch, n, max_new_tokens, temperature, top_p=top_p,
                                    eos_token_id=tokenizer.eos_id, generator=generator)
            texts = decode_completions(tokenizer, rollout.completion_ids)  # [len(chunk) * n], record-major
            totals, _ = scorer(texts, [record for record in chunk for _ in range(n)])
            for i, record in enumerate(chunk):
                good = passing(texts[i * n:(i + 1) * n], totals[i * n:(i + 1) * n], min_reward)
                chosen = list(dict.fromkeys(good))[:max_per_record or None]  # distinct, in sampling order
                kept, written, records_kept = kept + len(good), written + len(chosen), records_kept + bool(chosen)
                fields = relocated(record, manifest.parent, out.parent)
                f.writelines(json.dumps({**fields, "reasoning": r, "answer": a}) + "\n" for r, a in chosen)
            bar.update(len(chunk))
    counts = {"records": len(records), "samples": len(records) * n, "kept": kept,
              "keep_rate": round(kept / max(1, len(records) * n), 4), "records_kept": records_kept,
              "written": written}
    if summary is not None:
        Path(summary).write_text(json.dumps(counts, indent=2) + "\n")
    return counts
