"""The dual-stream policy: layout, generation rules, KV cache, log-probs, checkpoints, config.

All on the tiny configuration (CPU, a few seconds). Generation-rule tests steer the heads with
forward hooks that add a large bias to chosen ids at chosen steps (one head call per step in
both the cached and the cache-free path), so the forced-blank / latch / stop rules are checked
against decisions the model would otherwise have made.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file
from transformers.cache_utils import Cache

from paras2s_pl.models.dual_stream import DualStreamConfig, DualStreamLM, DualStreamOutput
from paras2s_pl.models.kimi_checkpoint import (
    KimiCheckpointError,
    build_policy,
    load_kimi_checkpoint,
)
from paras2s_pl.models.layout import IGNORE_INDEX, build_example, build_prompt, collate
from paras2s_pl.models.sampling import (
    SamplingConfig,
    generate,
    response_codes,
    response_text_ids,
    rollout_logprobs,
    sequence_logprobs,
)
from paras2s_pl.models.tokenizer import MINI_SPECIAL_IDS, build_mini_tokenizer, special_ids

X = IGNORE_INDEX
BLANK, EOS, USER, ASSIST, MB, ME, MSG_END, CT, CTD = range(9)  # mini tokenizer ids


@pytest.fixture(scope="module")
def cfg() -> DualStreamConfig:
    return DualStreamConfig.tiny(text_vocab_size=512, codec_vocab_size=264)


@pytest.fixture(scope="module")
def model(cfg) -> DualStreamLM:
    torch.manual_seed(0)
    return DualStreamLM(cfg).eval()


def prompt_batch(cfg, lengths=(5, 9, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    prompts = [build_prompt(torch.randint(0, 264, (n,), generator=g), cfg) for n in lengths]
    return collate(prompts, cfg.text_blank_id, left_pad=True)


def run(model, batch, sampling, seed=None):
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return generate(
        model, batch["audio_ids"], batch["text_ids"], batch["attention_mask"], sampling, gen
    )


# ---- layout ---------------------------------------------------------------------------------


def test_layout_hand_checked(cfg):
    c = DualStreamConfig.tiny(audio_delay=3)
    ex = build_example([5, 6], [100, 101, 102], [1, 2], c)
    # prompt: user_start media_begin q q media_end ctd msg_end assistant_start / blanks
    prompt_audio = [USER, MB, 517, 518, ME, CTD, MSG_END, ASSIST]
    assert ex.prompt_len == 8
    assert ex.audio_ids.tolist() == prompt_audio + [BLANK, BLANK, BLANK, 513, 514, MSG_END]
    assert ex.text_ids.tolist() == [BLANK] * 8 + [100, 101, 102, EOS, BLANK, BLANK]
    assert ex.audio_labels.tolist() == [X] * 8 + [X, X, X, 513, 514, MSG_END]
    assert ex.text_labels.tolist() == [X] * 8 + [100, 101, 102, EOS, X, X]
    assert not ex.truncated

    # text longer than delayed audio: the audio stream is padded with blanks after its end
    ex = build_example([7], [100, 101, 102, 103, 104, 105], [9], c)
    assert ex.audio_ids[7:].tolist() == [BLANK, BLANK, BLANK, 521, MSG_END, BLANK, BLANK]
    assert ex.audio_labels[7:].tolist() == [X, X, X, 521, MSG_END, X, X]
    assert ex.text_labels[7:].tolist() == [100, 101, 102, 103, 104, 105, EOS]

    # empty response text: text_eos then blanks
    ex = build_example([7], [], [9, 10], c)
    assert ex.text_ids[7:].tolist() == [EOS] + [BLANK] * 5
    assert ex.text_labels[7:].tolist() == [EOS] + [X] * 5


def test_layout_query_transcript_and_truncation(cfg):
    ex = build_example([1, 2, 3], [100], [4], cfg, query_text_ids=[200, 201])
    assert ex.text_ids[:9].tolist() == [BLANK, BLANK, 200, 201] + [BLANK] * 5
    assert (ex.text_labels[:9] == X).all() and not ex.query_text_truncated
    ex = build_example([1], [100], [4], cfg, query_text_ids=[200, 201])
    assert ex.text_ids[2] == 200 and ex.query_text_truncated

    full = build_example([1, 2], [100, 101], list(range(20)), cfg)
    cut = build_example([1, 2], [100, 101], list(range(20)), cfg, max_len=12)
    assert len(cut) == 12 and cut.truncated and not full.truncated
    assert torch.equal(cut.audio_ids, full.audio_ids[:12])
    assert torch.equal(cut.text_labels, full.text_labels[:12])
    with pytest.raises(ValueError, match="max_len=5"):
        build_example([1, 2], [100], [3], cfg, max_len=5)
    with pytest.raises(ValueError, match="audio_vocab_size=264"):
        build_example([1, 264], [100], [3], cfg)


def test_collate_padding(cfg):
    a = build_example([1], [100], [4], cfg)
    b = build_example([1, 2, 3], [100, 101], [4, 5, 6], cfg)
    right = collate([a, b], pad_id=BLANK)
    assert right["audio_ids"].shape == (2, len(b))
    assert right["attention_mask"][0].tolist() == [1] * len(a) + [0] * (len(b) - len(a))
    assert (right["audio_labels"][0, len(a) :] == X).all()
    assert right["prompt_lens"].tolist() == [7, 9]
    assert right["lengths"].tolist() == [len(a), len(b)]
    left = collate([a, b], pad_id=BLANK, left_pad=True)
    assert torch.equal(left["audio_ids"][0, -len(a) :], a.audio_ids)
    assert left["attention_mask"][0].tolist() == [0] * (len(b) - len(a)) + [1] * len(a)


# ---- generation rules -------------------------------------------------------------------------


class Steer:
    """Forward hooks adding +1e4 to ``plan[stream][(row, step)]`` ids at each generation step."""

    def __init__(self, model, plan):
        self.plan, self.calls = plan, {"text": 0, "audio": 0}
        self.handles = [
            model.lm_head.register_forward_hook(self.hook("text")),
            model.mimo_output.register_forward_hook(self.hook("audio")),
        ]

    def hook(self, stream):
        def fn(_module, _inputs, output):
            step = self.calls[stream]
            self.calls[stream] += 1
            output = output.clone()
            for row in range(output.shape[0]):
                token = self.plan[stream](row, step)
                if token is not None:
                    output[row, -1, token] += 1e4
            return output

        return fn

    def close(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_forced_blank_latch_and_stop(model, cfg, use_cache):
    eos_step, end_step = {0: 3, 1: 8, 2: None}, {0: 9, 1: 12, 2: None}

    def text_plan(row, step):  # eos at eos_step, else a word (which the latch must override)
        return EOS if step == eos_step[row] else 300

    def audio_plan(row, step):  # a code always (also during the delay), the end at end_step
        return MSG_END if step == end_step[row] else cfg.audio_offset + 7

    steer = Steer(model, {"text": text_plan, "audio": audio_plan})
    try:
        greedy = SamplingConfig(15, audio_temperature=0, text_temperature=0, use_cache=use_cache)
        r = run(model, prompt_batch(cfg), greedy)
    finally:
        steer.close()
    d = cfg.audio_delay
    assert r.audio_ids.shape == (3, 15)
    # forced blanks during the delay, not counted as policy tokens
    assert (r.audio_ids[:, :d] == BLANK).all() and not r.audio_mask[:, :d].any()
    assert (r.audio_logprobs[:, :d] == 0).all()
    # text latch after text_eos (eos itself is a real token)
    assert r.text_ids[0, :4].tolist() == [300, 300, 300, EOS]
    assert (r.text_ids[0, 4:] == BLANK).all() and not r.text_mask[0, 4:].any()
    assert r.text_mask[0, :4].all()
    # stop: row 0 ends at step 9 (end token real), then blanks, masked, attention off
    assert r.audio_ids[0, d:10].tolist() == [cfg.audio_offset + 7] * (9 - d) + [MSG_END]
    assert r.audio_mask[0, d:10].all() and not r.audio_mask[0, 10:].any()
    assert (r.audio_ids[0, 10:] == BLANK).all() and (r.text_ids[0, 10:] == BLANK).all()
    assert r.lengths.tolist() == [10, 13, 15]
    assert r.finished.tolist() == [True, True, False]
    assert r.truncated.tolist() == [False, False, True]
    start = r.response_start
    assert r.full_attention_mask[0, start : start + 10].all()
    assert not r.full_attention_mask[0, start + 10 :].any()
    # row 1: text ends at 8, so its text after eos is blank even though audio continues
    assert r.text_ids[1, 8] == EOS and (r.text_ids[1, 9:] == BLANK).all()
    assert r.text_mask[2].all() and (r.text_ids[2] == 300).all()  # never latched
    # decoding helpers
    assert response_codes(r, cfg)[0].tolist() == [7] * (9 - d)
    assert response_text_ids(r, cfg)[0] == [300, 300, 300]


def test_generation_stops_when_all_finished(model, cfg):
    batch = prompt_batch(cfg)
    steer = Steer(model, {"text": lambda r, s: EOS, "audio": lambda r, s: ME})
    try:
        r = run(model, batch, SamplingConfig(max_new_tokens=50))
        # a distributed caller keeps every rank stepping until all ranks are done
        synced = generate(
            model,
            batch["audio_ids"],
            batch["text_ids"],
            batch["attention_mask"],
            SamplingConfig(max_new_tokens=12),
            all_done=lambda done: torch.tensor(False),
        )
    finally:
        steer.close()
    d = cfg.audio_delay
    assert r.audio_ids.shape[1] == d + 1  # media_end also stops (Kimi)
    assert r.finished.all() and (r.lengths == d + 1).all()
    assert synced.audio_ids.shape[1] == 12 and (synced.lengths == d + 1).all()
    assert not synced.audio_mask[:, d + 1 :].any() and not synced.text_mask[:, d + 1 :].any()


def test_restricted_heads_only_emit_legal_ids(model, cfg):
    r = run(
        model,
        prompt_batch(cfg),
        SamplingConfig(max_new_tokens=30, text_temperature=1.0, text_top_k=0, audio_top_k=0),
        seed=3,
    )
    audio = r.audio_ids[r.audio_mask]
    in_block = (audio >= cfg.audio_offset) & (audio < cfg.audio_offset + cfg.audio_vocab_size)
    assert (in_block | torch.isin(audio, torch.tensor(cfg.audio_stop_ids))).all()
    text = r.text_ids[r.text_mask]
    assert (text < cfg.text_vocab_size).all()
    assert not torch.isin(text, torch.tensor([USER, ASSIST, MB, ME, MSG_END, CT, CTD])).any()


# ---- cache, batching, determinism ------------------------------------------------------------


def test_kv_cache_equals_cache_free_greedy(model, cfg):
    batch = prompt_batch(cfg, lengths=(4, 11, 7, 1))
    greedy = SamplingConfig(max_new_tokens=40, audio_temperature=0, text_temperature=0)
    cached = run(model, batch, greedy)
    fresh = run(model, batch, replace(greedy, use_cache=False))
    assert torch.equal(cached.audio_ids, fresh.audio_ids)
    assert torch.equal(cached.text_ids, fresh.text_ids)
    torch.testing.assert_close(cached.audio_logprobs, fresh.audio_logprobs, atol=1e-5, rtol=0)
    # left padding is invisible: each row alone gives the same tokens
    for row, n in enumerate((4, 11, 7, 1)):
        single = {k: v[row : row + 1, -(n + 6) :] for k, v in batch.items() if v.dim() == 2}
        alone = run(model, single, greedy)
        assert torch.equal(alone.audio_ids[0], cached.audio_ids[row, : alone.audio_ids.shape[1]])
        assert torch.equal(alone.text_ids[0], cached.text_ids[row, : alone.text_ids.shape[1]])


def test_cached_forward_output_under_installed_transformers(model, cfg):
    """The policy's output and cache work with the installed transformers, without the
    deprecation path: 5.24 renamed the cache keyword (``past_key_values`` -> ``cache``) and
    ModelOutput subclasses broke on it."""
    full = prompt_batch(cfg, lengths=(3, 5))
    batch = {k: full[k] for k in ("audio_ids", "text_ids", "attention_mask")}
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a deprecated keyword would warn
        out = model(**batch, use_cache=True)
        assert isinstance(out, DualStreamOutput)
        assert out.text_logits.shape == (2, batch["text_ids"].shape[1], cfg.vocab_size)
        assert out.audio_logits.shape == out.text_logits.shape
        assert isinstance(out.past_key_values, Cache)
        # trunk + MIMO layers, each holding every prompt position
        assert len(out.past_key_values.layers) == cfg.num_hidden_layers + cfg.mimo_layers
        assert out.past_key_values.get_seq_length() == batch["text_ids"].shape[1]
        step = torch.full((2, 1), cfg.text_blank_id)
        mask = torch.cat([batch["attention_mask"], torch.ones(2, 1, dtype=torch.long)], 1)
        nxt = model(step, step, mask, past_key_values=out.past_key_values, use_cache=True)
    assert nxt.text_logits.shape == (2, 1, cfg.vocab_size)
    assert nxt.past_key_values.get_seq_length() == batch["text_ids"].shape[1] + 1
    assert model(**batch).past_key_values is None


def test_deterministic_under_seed(model, cfg):
    sampling = SamplingConfig(max_new_tokens=20, text_temperature=0.9)
    a = run(model, prompt_batch(cfg), sampling, seed=7)
    b = run(model, prompt_batch(cfg), sampling, seed=7)
    c = run(model, prompt_batch(cfg), sampling, seed=8)
    assert torch.equal(a.audio_ids, b.audio_ids) and torch.equal(a.text_ids, b.text_ids)
    assert not torch.equal(a.audio_ids, c.audio_ids)


# ---- log-probs --------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_generation_logprobs_match_recompute(model, cfg, temperature):
    sampling = SamplingConfig(
        max_new_tokens=32,
        audio_temperature=temperature,
        text_temperature=temperature,
        audio_top_k=20,
        audio_top_p=0.9,
        text_top_k=0,
        text_repetition_penalty=1.3,
    )
    r = run(model, prompt_batch(cfg), sampling, seed=1)
    assert r.text_mask.any() and r.audio_mask.any()
    audio_lp, text_lp = rollout_logprobs(model, r, sampling)
    torch.testing.assert_close(audio_lp, r.audio_logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(text_lp, r.text_logprobs, atol=1e-5, rtol=0)
    assert (r.audio_logprobs[r.audio_mask] < 0).all()


def test_sequence_logprobs_carry_gradients(model, cfg):
    sampling = SamplingConfig(max_new_tokens=16, text_temperature=1.0)
    r = run(model, prompt_batch(cfg), sampling, seed=2)
    model.zero_grad()
    audio_lp, text_lp = sequence_logprobs(
        model,
        r.full_audio_ids,
        r.full_text_ids,
        r.full_attention_mask,
        r.response_start,
        sampling.temperatures,
        masks=(r.audio_mask, r.text_mask),
    )
    assert audio_lp.requires_grad and text_lp.requires_grad
    (-(audio_lp.sum() + text_lp.sum())).backward()
    for name in ("embed_tokens", "layers.0", "mimo_layers.1", "lm_head", "mimo_output"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name)]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    model.zero_grad()


# ---- model features -----------------------------------------------------------------------------


def test_whisper_adaptor_mixes_only_flagged_positions():
    c = DualStreamConfig.tiny(use_whisper_adaptor=True, adaptor_input_dim=16)
    m = DualStreamLM(c).eval()
    audio, text = torch.randint(0, c.vocab_size, (2, 6)), torch.randint(0, 512, (2, 6))
    feats = torch.randn(2, 6, 16)
    flags = torch.zeros(2, 6, dtype=torch.bool)
    flags[:, 2:4] = True
    mixed = m.embed(audio, text, feats, flags)
    plain = m.embed(audio, text)
    expect = (m.embed_tokens(audio) + m.vq_adaptor(feats)) * math.sqrt(2) + m.embed_tokens(text)
    torch.testing.assert_close(mixed[flags], expect[flags])
    torch.testing.assert_close(mixed[~flags], plain[~flags])
    with pytest.raises(ValueError, match="use_whisper_adaptor=False"):
        DualStreamLM(DualStreamConfig.tiny()).embed(audio, text, feats, flags)


def test_gradient_checkpointing_and_layer_class(cfg):
    m = DualStreamLM(cfg)
    m.activation_checkpointing_enable()  # v5 name of gradient_checkpointing_enable
    m.train()
    ex = collate([build_example([1, 2], [100, 101], [3, 4, 5], cfg)], BLANK)
    out = m(ex["audio_ids"], ex["text_ids"], attention_mask=ex["attention_mask"])
    out.text_logits.float().mean().backward()
    assert m.layers[0].gradient_checkpointing and m.mimo_layers[0].gradient_checkpointing
    assert type(m.layers[0]) is DualStreamLM.decoder_layer_class
    assert DualStreamLM._no_split_modules == ["Qwen2DecoderLayer"]


def test_save_load_round_trip(tmp_path, model, cfg):
    model.save_pretrained(tmp_path)
    loaded = DualStreamLM.from_pretrained(tmp_path).eval()
    saved = {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"}
    assert {k: v for k, v in loaded.config.to_dict().items() if k != "_name_or_path"} == saved
    audio, text = torch.randint(0, cfg.vocab_size, (2, 9)), torch.randint(0, 512, (2, 9))
    a, b = model(audio, text), loaded(audio, text)
    assert torch.equal(a.text_logits, b.text_logits) and torch.equal(a.audio_logits, b.audio_logits)


# ---- Kimi-Audio checkpoints ------------------------------------------------------------------


def kimi_named_state_dict(c: DualStreamConfig) -> dict[str, torch.Tensor]:
    """A random state dict spelled with Kimi-Audio's parameter names (modeling_moonshot_kimia)."""
    h, v = c.hidden_size, c.vocab_size
    kv = c.num_key_value_heads * (h // c.num_attention_heads)
    layer = {
        "self_attn.q_proj.weight": (h, h),
        "self_attn.q_proj.bias": (h,),
        "self_attn.k_proj.weight": (kv, h),
        "self_attn.k_proj.bias": (kv,),
        "self_attn.v_proj.weight": (kv, h),
        "self_attn.v_proj.bias": (kv,),
        "self_attn.o_proj.weight": (h, h),
        "mlp.gate_proj.weight": (c.intermediate_size, h),
        "mlp.up_proj.weight": (c.intermediate_size, h),
        "mlp.down_proj.weight": (h, c.intermediate_size),
        "input_layernorm.weight": (h,),
        "post_attention_layernorm.weight": (h,),
    }
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    shapes |= {
        "lm_head.weight": (v, h),
        "mimo_output.weight": (v, h),
        "model.mimo_norm.weight": (h,),
    }
    for i in range(c.num_hidden_layers):
        shapes |= {f"model.layers.{i}.{k}": s for k, s in layer.items()}
    for j in range(c.mimo_layers):
        shapes |= {f"model.mimo_layers.{j}.{k}": s for k, s in layer.items()}
    shapes |= {
        "model.vq_adaptor.layers.0.weight": (h, c.adaptor_input_dim),
        "model.vq_adaptor.layers.0.bias": (h,),
        "model.vq_adaptor.layers.3.weight": (h, h),
        "model.vq_adaptor.layers.3.bias": (h,),
        "model.vq_adaptor.layers.4.weight": (h,),
        "model.vq_adaptor.layers.4.bias": (h,),
    }
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


def test_kimi_named_checkpoint_loads_strict(tmp_path):
    c = DualStreamConfig.tiny(use_whisper_adaptor=True, adaptor_input_dim=32)
    state = kimi_named_state_dict(c)
    state["model.whisper_encoder.conv1.weight"] = torch.zeros(2)  # not the LM: skipped
    m = load_kimi_checkpoint(state, c)  # strict: raises on any missing/unexpected key
    assert torch.equal(m.layers[3].mlp.up_proj.weight, state["model.layers.3.mlp.up_proj.weight"])
    assert torch.equal(
        m.mimo_layers[1].self_attn.k_proj.bias, state["model.mimo_layers.1.self_attn.k_proj.bias"]
    )
    assert torch.equal(m.mimo_output.weight, state["mimo_output.weight"])
    assert torch.equal(m.vq_adaptor.layers[4].bias, state["model.vq_adaptor.layers.4.bias"])
    # from a safetensors file too
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    m2 = load_kimi_checkpoint(tmp_path, c)
    assert torch.equal(m2.lm_head.weight, state["lm_head.weight"])


def test_kimi_checkpoint_mismatch_is_reported():
    c = DualStreamConfig.tiny(use_whisper_adaptor=True, adaptor_input_dim=32)
    state = kimi_named_state_dict(c)
    del state["model.mimo_norm.weight"]
    state["model.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(KimiCheckpointError) as err:
        load_kimi_checkpoint(state, c)
    assert "mimo_norm.weight" in str(err.value) and "model.extra_head.weight" in str(err.value)
    loose = load_kimi_checkpoint(state, c, strict=False)
    assert isinstance(loose, DualStreamLM)


# ---- config ---------------------------------------------------------------------------------


def test_config_validation_errors(cfg):
    with pytest.raises(
        ValueError, match=r"mimo_transformer_from_layer_index=4.*num_hidden_layers=4"
    ):
        DualStreamConfig.tiny(mimo_transformer_from_layer_index=4)
    with pytest.raises(ValueError, match=r"1024 codes.*audio_vocab_size=264"):
        cfg.check_codec(1024)
    cfg.check_codec(264)
    with pytest.raises(ValueError, match="vocab_size=700"):
        DualStreamConfig.tiny(vocab_size=700)
    with pytest.raises(ValueError, match="text_eos_id=600"):
        DualStreamConfig.tiny(text_eos_id=600)
    with pytest.raises(ValueError, match="preset='huge'"):
        build_policy("huge")
    assert build_policy(text_vocab_size=600, codec_vocab_size=300).config.vocab_size == 900
    kimi = DualStreamConfig.kimi_audio_7b()
    assert (kimi.hidden_size, kimi.num_hidden_layers, kimi.mimo_layers) == (3584, 28, 6)
    assert (kimi.mimo_transformer_from_layer_index, kimi.audio_delay) == (21, 6)
    assert (kimi.audio_offset, kimi.vocab_size, kimi.audio_stop_ids) == (
        152064,
        168448,
        (151645, 151663),
    )
    kimi.check_codec(16384)


def test_mini_tokenizer_matches_config(tmp_path, cfg):
    tok = build_mini_tokenizer(512, tmp_path, kind="bpe")  # the tiny preset's default size
    again = build_mini_tokenizer(512, tmp_path, kind="bpe")
    assert tok.name_or_path == again.name_or_path and len(tok) == 512
    assert special_ids(tok) == MINI_SPECIAL_IDS
    assert {k: getattr(cfg, k) for k in MINI_SPECIAL_IDS} == MINI_SPECIAL_IDS
    ids = tok("How are you feeling today?")["input_ids"]
    assert tok.decode(ids) == "How are you feeling today?" and max(ids) < cfg.text_vocab_size
