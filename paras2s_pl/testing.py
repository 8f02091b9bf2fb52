"""Tiny synthetic shard sets for tests and examples (no TTS, a few samples, milliseconds).

Usage::

    from paras2s_pl.testing import write_tiny_set
    write_tiny_set(tmp_path, "train", n=6, schema="demo")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from paras2s_pl.data import labels
from paras2s_pl.data.schema import DemoMeta, PreferenceMeta, PromptMeta, QueryMeta
from paras2s_pl.data.shards import ShardSetWriter


def tone(seconds: float, hz: float, sr: int = 16000, amp: float = 0.3) -> np.ndarray:
    """A sine tone: enough to test plumbing without speech."""
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def tiny_meta(i: int, schema: str, split: str = "train") -> PromptMeta:
    """Deterministic metadata of sample ``i`` for ``schema``."""
    category = labels.SYNTHETIC_CATEGORIES[i % 4]
    style = labels.STYLES[category][(i // 4) % 2]
    base = {"content": f"sample number {i} says something", "speaker": "m1", "split": split}
    if schema == "prompt":
        return PromptMeta(**base)
    query = {
        **base,
        "category": category,
        "style": style,
        "topic": f"topic {i % 3}",
        "pair_id": f"pair-{i // 2}",
        "style_description": labels.STYLE_DESCRIPTIONS[style],
    }
    if schema == "query":
        return QueryMeta(**query)
    reply = {"response_text": f"reply to {i}", "response_tone": "neutral"}
    if schema == "demo":
        return DemoMeta(**query, **reply)
    return PreferenceMeta(**query, **reply, score=1 + i % 5, reason="tiny")


def write_tiny_set(
    root: str | Path,
    split: str = "train",
    n: int = 6,
    schema: str = "demo",
    maxcount: int = 100,
    sample_rate: int = 16000,
) -> dict:
    """Write ``n`` samples of ``schema`` with sine audio; returns the manifest."""
    with ShardSetWriter(
        root,
        split,
        schema,
        sample_rate=sample_rate,
        maxcount=maxcount,
        provenance={"command": "paras2s_pl.testing.write_tiny_set"},
    ) as w:
        for i in range(n):
            meta = tiny_meta(i, schema, split)
            w.write(
                f"s{i:04d}",
                meta,
                tone(0.5 + 0.1 * (i % 3), 200 + 20 * i, sample_rate),
                tone(0.4, 300, sample_rate),
            )
    assert w.manifest is not None
    return w.manifest


#: A policy smaller than the tiny preset: a few dozen CPU steps memorise a handful of replies.
SMALL_POLICY = dict(
    hidden_size=64,
    intermediate_size=192,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    mimo_layers=1,
    mimo_transformer_from_layer_index=1,
)


def write_tiny_policy(
    path: str | Path, seed: int = 0, query_transcript: bool | None = None, **config
) -> Path:
    """Export a random :data:`SMALL_POLICY` as the SFT stage does.

    Writes the weights, the mini tokenizer and ``paras2s_policy.json`` (prosody codec, and
    ``query_transcript`` unless None: an export from before that field); ``config``
    overrides :data:`SMALL_POLICY`.
    """
    import json

    import torch

    from paras2s_pl.models.dual_stream import DualStreamConfig, DualStreamLM
    from paras2s_pl.models.tokenizer import build_mini_tokenizer

    path = Path(path)
    tok = build_mini_tokenizer()
    torch.manual_seed(seed)
    cfg = DualStreamConfig.tiny(len(tok), 264, **{**SMALL_POLICY, **config})
    DualStreamLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    info = {"codec": "paras2s_pl.audio.codec.ProsodyCodec", "codec_vocab_size": 264}
    if query_transcript is not None:
        info["query_transcript"] = query_transcript
    (path / "paras2s_policy.json").write_text(json.dumps(info))
    return path
