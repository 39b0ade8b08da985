"""A pre-allocated key/value cache for incremental decoding.

Every cached tensor has its sequence axis at dim -2: GQA keys/values are
[B, n_kv_heads, S, head_dim], MLA's compressed latent is [B, S, kv_lora_rank].
Each layer writes its new entries with `update`; the core calls `advance` once per
forward. The cache also remembers which key positions are real (`valid`), where the
multimodal prefix ends (`n_prefix`) and the next RoPE position of every row.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_slots: int, capacity: int):
        self.capacity = capacity  # longest sequence the buffers hold before growing
        self.slots: list[dict[str, torch.Tensor]] = [{} for _ in range(n_slots)]
        self.static: dict[str, torch.Tensor] = {}  # computed once per prompt (e.g. IRM prefix keys)
        self.length = 0  # positions written so far
        self.n_prefix = 0  # the first n_prefix positions are the bidirectional prefix
        self.valid: torch.Tensor | None = None  # [B, length] bool, real (non-padding) positions
        self.next_position: torch.Tensor | None = None  # [B] long, RoPE position of the next real token

    def update(self, slot: int, name: str, new: torch.Tensor) -> torch.Tensor:
        """Write `new` [..., T, d] after the cached positions; return all [..., length + T, d]."""
        T = new.shape[-2]
        end = self.length + T
        buffers = self.slots[slot]
        buffer = buffers.get(name)
        if buffer is None or buffer.shape[-2] < end:
            size = max(self.capacity, end) if buffer is None else max(2 * buffer.shape[-2], end)
            grown = new.new_zeros(*new.shape[:-2], size, new.shape[-1])
            if buffer is not None:
                grown[..., : self.length, :] = buffer[..., : self.length, :]
            buffers[name] = buffer = grown
        buffer[..., self.length : end, :] = new
        return buffer[..., :end, :]

    def advance(self, valid: torch.Tensor, next_position: torch.Tensor) -> None:
        """Record the T positions just written: valid [B, T] and the rows' next positions [B]."""
        self.valid = valid if self.valid is None else torch.cat((self.valid, valid), dim=1)
        self.length = self.valid.shape[1]
        self.next_position = next_position

    def repeat_interleave(self, repeats: int) -> "KVCache":
        """Each row repeated `repeats` times (row b -> rows b*repeats ... ): G samples share one prompt."""
        out = KVCache(len(self.slots), self.capacity)
        out.slots = [{k: v.repeat_interleave(repeats, dim=0) for k, v in s.items()} for s in self.slots]
        out.static = {k: v.repeat_interleave(repeats, dim=0) for k, v in self.static.items()}
        out.length, out.n_prefix = self.length, self.n_prefix
        out.valid = None if self.valid is None else self.valid.repeat_interleave(repeats, dim=0)
        out.next_position = None if self.next_position is None else self.next_position.repeat_interleave(repeats, 0)
        return out

    def nbytes_per_token(self) -> int:
        """Bytes the cache spends on one position of one sequence, all layers together."""
        total = 0
        for slot in self.slots:
            for t in slot.values():
                total += t[0].element_size() * t[0].numel() // t.shape[-2]
        return total
