"""The decoder reasoning core.

Pre-norm decoder blocks (GQA or MLA attention with RoPE, SwiGLU or DeepSeek-MoE
feed-forward, RMSNorm), a prefix-LM mask (the multimodal prefix sees itself
bidirectionally, text is causal), an Iterative Refinement Module over the final
states, a tied LM head and a pre-allocated KV cache. Parameter names follow Hugging
Face Llama/Qwen2 so their checkpoints load directly (see `mmr1.interop`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mmr1.cache import KVCache
from mmr1.config import CoreConfig
from mmr1.layers.attention import Attention, CrossAttention
from mmr1.layers.mla import MultiHeadLatentAttention
from mmr1.layers.mlp import SwiGLU
from mmr1.layers.moe import MoE
from mmr1.layers.rope import RotaryEmbedding
from mmr1.sampling import next_token


@dataclass
class CoreOutput:
    logits: torch.Tensor | None  # [B, T, V] for the text positions (or the last `logits_to_keep`)
    hidden: torch.Tensor  # [B, T, D] final normalised states of the text positions
    prefix_hidden: torch.Tensor | None = None  # [B, P, D] final states of the prefix positions


def make_attention(cfg: CoreConfig) -> nn.Module:
    return MultiHeadLatentAttention(cfg) if cfg.attention == "mla" else Attention(cfg)


class Block(nn.Module):
    def __init__(self, cfg: CoreConfig, moe: bool):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.self_attn = make_attention(cfg)
        self.post_attention_layernorm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = MoE(cfg) if moe else SwiGLU(cfg.d_model, cfg.intermediate_size)

    def forward(self, x, rope, mask, cache=None, slot=0, valid=None) -> torch.Tensor:
        """x [B, T, D]; `valid` [B, T] bool marks real tokens (the MoE counts only those)."""
        x = x + self.self_attn(self.input_layernorm(x), rope, mask, cache, slot)
        h = self.post_attention_layernorm(x)
        return x + (self.mlp(h, valid) if isinstance(self.mlp, MoE) else self.mlp(h))


class RefinementBlock(nn.Module):
    """The Iterative Refinement Module's block: self-attention, cross-attention to the
    prefix, FFN. Its output projections start at zero, so it begins as the identity."""

    def __init__(self, cfg: CoreConfig):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.self_attn = make_attention(cfg)
        self.cross_layernorm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.cross_attn = CrossAttention(cfg)
        self.post_attention_layernorm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.intermediate_size)

    def zero_init_outputs(self) -> None:
        for linear in (self.self_attn.o_proj, self.cross_attn.o_proj, self.mlp.down_proj):
            nn.init.zeros_(linear.weight)

    def forward(self, x, rope, mask, prefix_kv, prefix_mask, cache=None, slot=0) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, mask, cache, slot)
        if prefix_kv is not None:
            x = x + self.cross_attn(self.cross_layernorm(x), prefix_kv, prefix_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class ReasoningCore(nn.Module):
    def __init__(self, cfg: CoreConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, moe) for moe in cfg.is_moe_layer)
        self.refine = RefinementBlock(cfg) if cfg.n_refine_iters else None
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        rope_dim = cfg.qk_rope_head_dim if cfg.attention == "mla" else cfg.head_dim
        self.rotary = RotaryEmbedding(rope_dim, cfg.rope_base)
        self.apply(self._init_weights)
        if self.refine is not None:
            self.refine.zero_init_outputs()
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    @property
    def n_cache_slots(self) -> int:
        return len(self.layers) + self.config.n_refine_iters

    def moe_layers(self) -> list[MoE]:
        return [m for m in self.modules() if isinstance(m, MoE)]

    # ---- forward ------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,  # [B, T] long
        attention_mask: torch.Tensor | None = None,  # [B, T], 1/True = real token
        prefix_embeds: torch.Tensor | None = None,  # [B, P, D] multimodal prefix, already at d_model
        prefix_mask: torch.Tensor | None = None,  # [B, P]
        cache: KVCache | None = None,
        logits_to_keep: int = 0,  # 0: logits for every text position; k: only the last k
        inputs_embeds: torch.Tensor | None = None,  # [B, T, D] instead of input_ids
        document_ids: torch.Tensor | None = None,  # [B, T] packed sequences: attend within a document only
    ) -> CoreOutput:
        text, text_valid = self._embed_text(input_ids, inputs_embeds, attention_mask)
        B, T, _ = text.shape
        P = 0
        if prefix_embeds is not None:
            if cache is not None and cache.length:
                raise ValueError("prefix_embeds: the prefix must be given on the first call with a cache, not later")
            prefix_valid = self._check_prefix(prefix_embeds, prefix_mask, B)
            P = prefix_embeds.shape[1]
            x = torch.cat((prefix_embeds.to(text.dtype), text), dim=1)  # [B, P+T, D]
            valid = torch.cat((prefix_valid, text_valid), dim=1)  # [B, P+T]
        else:
            prefix_valid = None
            x, valid = text, text_valid

        past = cache.length if cache is not None else 0
        if past + P + T > self.config.max_seq_len:
            raise ValueError(
                f"sequence length {past + P + T} (cached {past} + prefix {P} + text {T}) exceeds "
                f"core.max_seq_len={self.config.max_seq_len}"
            )
        n_prefix = cache.n_prefix if (cache is not None and past) else P
        start_position = cache.next_position if (cache is not None and past) else None
        all_valid = valid if not past else torch.cat((cache.valid, valid), dim=1)  # [B, S]
        if document_ids is not None:
            if P or cache is not None or document_ids.shape != (B, T):
                raise ValueError(f"document_ids: expected [{B}, {T}] like input_ids, for packed text without "
                                 f"a prefix or a cache; got {list(document_ids.shape)}")
            positions, next_position = _document_positions(document_ids, valid), None
            mask = document_mask(document_ids, valid)  # [B, 1, T, T]
        else:
            positions, next_position = _positions(valid, start_position)  # [B, P+T], [B]
            mask = None
            if n_prefix or not bool(all_valid.all()):
                mask = prefix_lm_mask(all_valid, n_prefix, past)  # [B, 1, P+T, S]
        rope = self.rotary(positions, x.dtype)

        for i, layer in enumerate(self.layers):
            x = layer(x, rope, mask, cache, i, valid)
        if self.refine is not None:
            prefix_kv, refine_mask = self._refine_memory(x, P, prefix_valid, cache)
            for it in range(self.config.n_refine_iters):
                x = self.refine(x, rope, mask, prefix_kv, refine_mask, cache, len(self.layers) + it)
        if cache is not None:
            if not past:
                cache.n_prefix = P
            cache.advance(valid, next_position)

        x = self.norm(x)
        hidden = x[:, P:]
        keep = hidden if logits_to_keep == 0 else hidden[:, -logits_to_keep:]
        logits = self.lm_head(keep) if keep.shape[1] else None
        return CoreOutput(logits=logits, hidden=hidden, prefix_hidden=x[:, :P] if P else None)

    def _embed_text(self, input_ids, inputs_embeds, attention_mask):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids [B, T] or inputs_embeds [B, T, D]")
        if input_ids is not None:
            if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int32, torch.int64):
                raise ValueError(f"input_ids: expected an integer tensor [B, T], got {input_ids.dtype} "
                                 f"{list(input_ids.shape)}")
            if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
                raise ValueError(f"input_ids: token ids must lie in [0, {self.config.vocab_size}), got "
                                 f"{int(input_ids.min())}..{int(input_ids.max())}")
            embeds = self.embed_tokens(input_ids)
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.d_model:
                raise ValueError(f"inputs_embeds: expected [B, T, {self.config.d_model}], got "
                                 f"{list(inputs_embeds.shape)}")
            embeds = inputs_embeds
        B, T = embeds.shape[:2]
        if B == 0:
            raise ValueError("input_ids: the batch is empty")
        if attention_mask is None:
            return embeds, torch.ones(B, T, dtype=torch.bool, device=embeds.device)
        if attention_mask.shape != (B, T):
            raise ValueError(f"attention_mask: expected shape [{B}, {T}] like input_ids, got "
                             f"{list(attention_mask.shape)}")
        return embeds, attention_mask.bool()

    def _check_prefix(self, prefix_embeds, prefix_mask, B) -> torch.Tensor:
        D = self.config.d_model
        if prefix_embeds.dim() != 3 or prefix_embeds.shape[0] != B or prefix_embeds.shape[2] != D:
            raise ValueError(f"prefix_embeds: expected [{B}, P, {D}], got {list(prefix_embeds.shape)}")
        P = prefix_embeds.shape[1]
        if prefix_mask is None:
            return torch.ones(B, P, dtype=torch.bool, device=prefix_embeds.device)
        if prefix_mask.shape != (B, P):
            raise ValueError(f"prefix_mask: expected shape [{B}, {P}] like prefix_embeds, "
                             f"got {list(prefix_mask.shape)}")
        return prefix_mask.bool()

    def _refine_memory(self, x, P, prefix_valid, cache):
        """Keys/values of the prefix states for the IRM's cross-attention, computed once per prompt."""
        if cache is not None and "refine_k" in cache.static:
            return (cache.static["refine_k"], cache.static["refine_v"]), cache.static["refine_mask"]
        if P == 0:
            return None, None
        prefix_kv = self.refine.cross_attn.memory_kv(x[:, :P])  # [B, H, P, d] each
        if cache is not None:
            cache.static.update(refine_k=prefix_kv[0], refine_v=prefix_kv[1], refine_mask=prefix_valid)
        return prefix_kv, prefix_valid

    # ---- generation -----------------------------------------------------------------
    def new_cache(self, capacity: int) -> KVCache:
        return KVCache(self.n_cache_slots, capacity)

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,  # [B, T]; left-pad rows of different lengths
        attention_mask: torch.Tensor | None = None,
        prefix_embeds: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        eos_token_id: int | list[int] | None = -1,  # -1: the config's eos; None: never stop early
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Greedy (default) or sampled continuation; returns [B, T + new] like transformers:
        finished rows are filled with the pad id, and decoding stops once every row is done."""
        tokens = list(self.stream(input_ids, attention_mask, prefix_embeds, prefix_mask, max_new_tokens,
                                  do_sample, temperature, top_k, top_p, eos_token_id, generator))
        if not tokens:
            return input_ids
        return torch.cat((input_ids, torch.stack(tokens, dim=1)), dim=1)

    @torch.inference_mode()
    def stream(self, input_ids, attention_mask=None, prefix_embeds=None, prefix_mask=None, max_new_tokens=32,
               do_sample=False, temperature=1.0, top_k=0, top_p=1.0, eos_token_id=-1, generator=None):
        """Yield the next token of every row ([B] long) as it is decoded."""
        P = 0 if prefix_embeds is None else prefix_embeds.shape[1]
        cache = self.new_cache(P + input_ids.shape[1] + max_new_tokens)
        out = self(input_ids, attention_mask, prefix_embeds, prefix_mask, cache=cache, logits_to_keep=1)
        yield from self.decode(cache, out.logits[:, -1], max_new_tokens, do_sample, temperature, top_k, top_p,
                               eos_token_id, generator)

    @torch.inference_mode()
    def decode(self, cache: KVCache, logits: torch.Tensor, max_new_tokens: int, do_sample=False, temperature=1.0,
               top_k=0, top_p=1.0, eos_token_id=-1, generator=None):
        """Continue from a filled cache whose next-token logits [B, V] are given; yield [B] tokens.

        Finished rows (after an eos) yield the pad id, fed back as padding (so an MoE in training
        mode does not count them); decoding stops once every row is done."""
        cfg = self.config
        stop_ids = _stop_ids(cfg.eos_token_id if eos_token_id == -1 else eos_token_id, logits.device)
        B = logits.shape[0]
        finished = torch.zeros(B, dtype=torch.bool, device=logits.device)
        for step in range(max_new_tokens):
            token = next_token(logits, do_sample, temperature, top_k, top_p, generator)  # [B]
            token = torch.where(finished, torch.full_like(token, cfg.pad_token_id), token)
            yield token
            real = ~finished[:, None]  # [B, 1]: this token is real (an eos included)
            if stop_ids is not None:
                finished |= torch.isin(token, stop_ids)
                if bool(finished.all()):
                    return
            if step + 1 < max_new_tokens:
                logits = self(token[:, None], real, cache=cache, logits_to_keep=1).logits[:, -1]

    # ---- checkpoints ----------------------------------------------------------------
    @classmethod
    def from_hf(cls, folder: str | Path, dtype: torch.dtype = torch.float32) -> "ReasoningCore":
        """Load a Hugging Face Llama or Qwen2 checkpoint folder (config.json + safetensors), or a folder
        written by `save_pretrained`."""
        from mmr1.interop import load_hf_core

        return load_hf_core(cls, folder, dtype)

    def save_pretrained(self, folder: str | Path, tokenizer=None) -> Path:
        from mmr1.checkpoint import save_pretrained

        return save_pretrained(self, {"architecture": "ReasoningCore", "core": _asdict(self.config)}, folder, tokenizer)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "ReasoningCore":
        from mmr1.checkpoint import load_pretrained_state, read_config

        data = read_config(folder, "ReasoningCore")
        core = cls(CoreConfig(**data["core"]))
        load_pretrained_state(core, folder)
        return core


def _asdict(cfg) -> dict:
    import dataclasses

    return dataclasses.asdict(cfg)


def _stop_ids(eos, device) -> torch.Tensor | None:
    if eos is None:
        return None
    return torch.tensor([eos] if isinstance(eos, int) else list(eos), device=device)


def _positions(valid: torch.Tensor, start: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE positions counting only real tokens (so left padding does not shift them)."""
    counts = valid.long().cumsum(dim=1)  # [B, T]
    offset = 0 if start is None else start[:, None]
    positions = (counts - 1).clamp(min=0) + offset
    return positions, counts[:, -1] + (0 if start is None else start)


def _document_positions(document_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Positions that restart at 0 at the first token of every packed document."""
    T = document_ids.shape[1]
    index = torch.arange(T, device=document_ids.device).expand_as(document_ids)  # [B, T]
    starts = torch.ones_like(valid)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    start_index = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values  # [B, T]
    return index - start_index


def document_mask(document_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Bool [B, 1, T, T]: causal attention inside each packed document (and to itself always)."""
    T = document_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=document_ids.device).tril()  # [T, T]
    same = document_ids[:, :, None] == document_ids[:, None, :]  # [B, T, T]
    mask = causal & same & valid[:, None, :]
    return (mask | torch.eye(T, dtype=torch.bool, device=document_ids.device))[:, None]


def prefix_lm_mask(valid: torch.Tensor, n_prefix: int, past: int) -> torch.Tensor:
    """Bool [B, 1, Tq, S] for the last Tq = S - past positions: a query sees real keys that
    come before it, every prefix query sees the whole prefix, and every query sees itself
    (so padding rows never attend to nothing)."""
    B, S = valid.shape
    q = torch.arange(past, S, device=valid.device)[:, None]  # [Tq, 1]
    k = torch.arange(S, device=valid.device)[None, :]  # [1, S]
    allowed = (k <= q) | ((q < n_prefix) & (k < n_prefix))  # [Tq, S]
    mask = allowed[None] & valid[:, None, :]  # [B, Tq, S]
    mask = mask | (k == q)[None]
    return mask[:, None]
