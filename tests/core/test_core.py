"""Reasoning core: KV cache, prefix-LM mask, MoE balancing, MLA cache size, checkpoints, bad input."""


import pytest
import torch

from mmr1.config import CoreConfig
from mmr1.core import ReasoningCore

VARIANTS = {
    "plain": dict(),
    "irm": dict(n_refine_iters=2),
    "moe": dict(n_routed_experts=4, n_shared_experts=1, n_experts_per_token=2, first_dense_layers=1),
    "mla": dict(attention="mla", kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=12),
    "mla-qlora-irm-moe": dict(attention="mla", q_lora_rank=24, n_refine_iters=1, n_routed_experts=4),
}


def make_core(**overrides) -> ReasoningCore:
    torch.manual_seed(0)
    cfg = CoreConfig(vocab_size=64, n_layers=2, d_model=48, n_heads=4, n_kv_heads=2, intermediate_size=96,
                     max_seq_len=96, **overrides)
    core = ReasoningCore(cfg).eval()
    if core.refine is not None:  # leave the zero-initialised identity so the IRM does something
        for p in core.refine.parameters():
            torch.nn.init.normal_(p, std=0.05) if p.dim() > 1 else None
    return core


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_decoding_equals_full_forward(variant):
    core = make_core(**VARIANTS[variant])
    B, P, T = 2, 5, 11
    ids = torch.randint(3, 64, (B, T))
    prefix = torch.randn(B, P, 48)
    prefix_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    attention_mask = torch.ones(B, T, dtype=torch.bool)
    attention_mask[1, :3] = False  # left padding in row 1
    with torch.no_grad():
        full = core(ids, attention_mask, prefix, prefix_mask).logits  # [B, T, V]
        cache = core.new_cache(8)  # smaller than needed: the cache must grow
        steps = [core(ids[:, :4], attention_mask[:, :4], prefix, prefix_mask, cache=cache).logits]
        for t in range(4, T):
            steps.append(core(ids[:, t:t + 1], attention_mask[:, t:t + 1], cache=cache).logits)
    incremental = torch.cat(steps, dim=1)
    real = attention_mask  # padded positions' outputs are meaningless
    torch.testing.assert_close(incremental[real], full[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("with_prefix", [False, True], ids=["text", "prefix"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_chunked_prefill_equals_full_forward(variant, with_prefix):
    """A prompt fed through the cache in chunks of several tokens, without padding, gives the
    full forward's logits (the chunk's causal mask is aligned to the end of the cached keys)."""
    core = make_core(**VARIANTS[variant])
    B, T = 2, 13
    ids = torch.randint(3, 64, (B, T))
    prefix = torch.randn(B, 4, 48) if with_prefix else None
    with torch.no_grad():
        full = core(ids, prefix_embeds=prefix).logits  # [B, T, V]
        cache = core.new_cache(4)
        chunks = [core(ids[:, :5], prefix_embeds=prefix, cache=cache).logits,
                  core(ids[:, 5:9], cache=cache).logits,
                  core(ids[:, 9:], cache=cache).logits]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-5)


def test_generate_is_reproducible_under_sampling_and_stops_at_eos():
    core = make_core()
    ids = torch.randint(3, 64, (3, 6))
    a = core.generate(ids, max_new_tokens=8, do_sample=True, top_k=10, top_p=0.9,
                      generator=torch.Generator().manual_seed(3))
    b = core.generate(ids, max_new_tokens=8, do_sample=True, top_k=10, top_p=0.9,
                      generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (3, 14)
    # A row stops at its first eos and is then padded; decoding ends once every row has stopped.
    greedy = core.generate(ids, max_new_tokens=8, eos_token_id=None)
    eos = int(greedy[0, 7])
    out = core.generate(ids, max_new_tokens=8, eos_token_id=eos)
    first = {r: int((greedy[r, 6:] == eos).nonzero()[0]) for r in range(3) if (greedy[r, 6:] == eos).any()}
    assert out.shape[1] == (6 + 8 if len(first) < 3 else 6 + max(first.values()) + 1)
    for r, k in first.items():
        assert torch.equal(out[r, 6:6 + k + 1], greedy[r, 6:6 + k + 1])
        assert (out[r, 6 + k + 1:] == core.config.pad_token_id).all()


def test_prefix_lm_mask():
    core = make_core()
    B, P, T = 1, 4, 8
    ids = torch.randint(3, 64, (B, T))
    prefix = torch.randn(B, P, 48)
    with torch.no_grad():
        base = core(ids, prefix_embeds=prefix)
        later = ids.clone()
        later[0, 5] = (later[0, 5] + 1) % 64
        changed_text = core(later, prefix_embeds=prefix)
        prefix2 = prefix.clone()
        prefix2[0, 3] += 1.0
        changed_prefix = core(ids, prefix_embeds=prefix2)
    # A later text token never changes earlier positions (text is causal) ...
    torch.testing.assert_close(changed_text.logits[:, :5], base.logits[:, :5], atol=0, rtol=0)
    torch.testing.assert_close(changed_text.prefix_hidden, base.prefix_hidden, atol=0, rtol=0)
    assert not torch.allclose(changed_text.logits[:, 5:], base.logits[:, 5:])
    # ... while the prefix is bidirectional: its last token changes every prefix and text position.
    assert not torch.isclose(changed_prefix.prefix_hidden, base.prefix_hidden).all(dim=-1).any()
    assert not torch.isclose(changed_prefix.logits, base.logits).all(dim=-1).any()


def test_irm_starts_as_identity():
    """Adding the IRM to a trained core changes nothing until the IRM itself is trained."""
    torch.manual_seed(0)
    sizes = dict(vocab_size=64, n_layers=2, d_model=48, n_heads=4, n_kv_heads=2, intermediate_size=96)
    plain = ReasoningCore(CoreConfig(**sizes)).eval()
    refined = ReasoningCore(CoreConfig(**sizes, n_refine_iters=3)).eval()
    missing = refined.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("refine.") for k in missing)
    ids, prefix = torch.randint(3, 64, (2, 7)), torch.randn(2, 3, 48)
    with torch.no_grad():
        torch.testing.assert_close(refined(ids, prefix_embeds=prefix).logits, plain(ids, prefix_embeds=prefix).logits)


def test_moe_bias_balancing_reaches_uniform_load():
    """A router that starts sending half its tokens to expert 0 is balanced by the routing bias
    alone (no auxiliary loss) within 100 steps of the default-sized update."""
    n_experts, steps, rate = 8, 100, 0.01
    core = make_core(n_routed_experts=n_experts, n_experts_per_token=2, n_shared_experts=1).train()
    moe = core.moe_layers()[0]
    with torch.no_grad():
        moe.router.weight.normal_(std=0.3)
        moe.router.weight[0] += 0.4  # inputs have a positive mean: experts 0 and 1 win most tokens
        moe.router.weight[1] += 0.2
    data = torch.Generator().manual_seed(0)

    def max_share_over(n_batches: int, update: bool) -> float:
        load = torch.zeros(n_experts)
        for _ in range(n_batches):
            moe(torch.randn(1024, 48, generator=data) + 0.5)
            load += moe.expert_load
            moe.update_routing_bias(rate if update else 0.0)
        return float((load / load.sum()).max())

    before = max_share_over(1, update=False)
    max_share_over(steps, update=True)
    after = max_share_over(10, update=False)
    uniform = 1 / n_experts
    assert before > 3 * uniform
    assert after < 1.3 * uniform, f"max expert share {after:.3f} after {steps} steps"
    assert moe.router.weight.grad is None


def test_moe_load_counts_only_real_tokens():
    """Right padding (or tokens after an eos) in a batch adds nothing to the expert load:
    the padded batch's load equals that of its rows run unpadded, one by one."""
    core = make_core(n_routed_experts=4, n_experts_per_token=2, first_dense_layers=0).train()
    lengths = [9, 4, 6]
    ids = torch.randint(3, 64, (len(lengths), max(lengths)))
    mask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]  # [B, T]
    with torch.no_grad():
        core(ids, mask)
        padded = [m.expert_load.clone() for m in core.moe_layers()]
        for m in core.moe_layers():
            m.expert_load.zero_()
        for row, n in zip(ids, lengths):
            core(row[None, :n])
        unpadded = [m.expert_load.clone() for m in core.moe_layers()]
    assert float(padded[0].sum()) == sum(lengths) * 2
    for a, b in zip(padded, unpadded):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_moe_load_in_generation_skips_tokens_after_eos():
    """Decoding feeds a finished row's pad tokens back as padding: an MoE in training mode counts
    the real prompt tokens and each row's tokens up to its eos, nothing after."""
    core = make_core(n_routed_experts=4, n_experts_per_token=2, first_dense_layers=0)
    ids = torch.randint(3, 64, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[2, :2] = False  # left padding
    greedy = core.generate(ids, mask, max_new_tokens=10, eos_token_id=None)[:, 6:]  # [3, 10]
    eos = int(greedy[0, 3])  # row 0 stops after 4 tokens; the others may stop at it too
    core.train()
    out = core.generate(ids, mask, max_new_tokens=10, eos_token_id=eos)[:, 6:]
    fed = out[:, :-1]  # the last token yielded is never fed back
    after_eos = ((fed == eos).cumsum(dim=1) - (fed == eos).long()) > 0  # [3, steps - 1]
    assert after_eos.any()  # some row went on decoding after another one's eos
    n_real = int(mask.sum()) + int((~after_eos).sum())
    for moe in core.moe_layers():
        assert float(moe.expert_load.sum()) == 2 * n_real


def test_mla_cache_is_smaller_than_gqa_at_equal_width():
    ids = torch.randint(3, 64, (2, 10))
    sizes = {}
    for name, extra in (("gqa", {}), ("mla", VARIANTS["mla"])):
        core = make_core(**extra)
        cache = core.new_cache(16)
        with torch.no_grad():
            core(ids, cache=cache)
        sizes[name] = cache.nbytes_per_token()
    # GQA: 2 layers x (k + v) x 2 kv heads x 12 dims x 4 bytes; MLA: 2 layers x (16 + 8) x 4 bytes.
    assert sizes == {"gqa": 2 * 2 * 2 * 12 * 4, "mla": 2 * (16 + 8) * 4}


def test_save_load_round_trip_is_bit_exact(tmp_path):
    core = make_core(**VARIANTS["mla-qlora-irm-moe"])
    core.save_pretrained(tmp_path)
    loaded = ReasoningCore.from_pretrained(tmp_path)
    assert loaded.config == core.config
    for (name, a), (_, b) in zip(core.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.lm_head.weight is loaded.embed_tokens.weight


def test_pickle_that_runs_code_is_refused(tmp_path):
    from mmr1.checkpoint import safe_torch_load

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "x": Exploit()}, path)
    with pytest.raises(ValueError, match="refused to load"):
        safe_torch_load(path)
    torch.save({"state_dict": {"w": torch.ones(1)}}, tmp_path / "ok.pt")
    assert torch.equal(safe_torch_load(tmp_path / "ok.pt")["state_dict"]["w"], torch.ones(1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_ids=torch.ones(2, 3)), "input_ids: expected an integer tensor"),
    (dict(input_ids=torch.ones(3, dtype=torch.long)), "input_ids: expected an integer tensor"),
    (dict(input_ids=torch.full((1, 3), 64)), r"token ids must lie in \[0, 64\)"),
    (dict(input_ids=torch.ones(0, 3, dtype=torch.long)), "batch is empty"),
    (dict(input_ids=torch.ones(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4)), "attention_mask"),
    (dict(input_ids=torch.ones(1, 97, dtype=torch.long)), "exceeds core.max_seq_len=96"),
    (dict(input_ids=torch.ones(2, 3, dtype=torch.long), prefix_embeds=torch.ones(2, 4, 32)), "prefix_embeds"),
    (dict(input_ids=torch.ones(2, 3, dtype=torch.long), prefix_embeds=torch.ones(2, 4, 48),
          prefix_mask=torch.ones(2, 5)), "prefix_mask"),
])
def test_bad_input_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_core()(**kwargs)


@pytest.mark.parametrize("kwargs, field", [
    (dict(n_heads=6, n_kv_heads=4), "core.n_heads"),
    (dict(n_kv_heads=0), "core.n_kv_heads"),
    (dict(d_model=50, n_heads=4), "core.d_model"),
    (dict(n_routed_experts=2, n_experts_per_token=3), "core.n_experts_per_token"),
    (dict(attention="flash"), "core.attention"),
])
def test_inconsistent_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CoreConfig(**kwargs)


def test_packed_documents_equal_separate_forwards():
    """Packing: positions restart per document and no document attends to another."""
    core = make_core(**VARIANTS["irm"])
    a, b = torch.randint(3, 64, (1, 5)), torch.randint(3, 64, (1, 7))
    packed = torch.cat((a, b), dim=1)
    documents = torch.tensor([[0] * 5 + [1] * 7])
    with torch.no_grad():
        out = core(packed, document_ids=documents).logits
        torch.testing.assert_close(out[:, :5], core(a).logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[:, 5:], core(b).logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="document_ids"):
        core(packed, document_ids=documents[:, :4])
