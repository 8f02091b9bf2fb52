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
