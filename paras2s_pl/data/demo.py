"""Build the mini-world shard sets from the seed queries: ``paras2s shards build-demo``.

Writes under ``--out`` (default ``shards/demo``):

* ``train`` and ``test`` (schema ``demo``): each seed content spoken in both of its
  contrasting styles, with the reference reply spoken in its tone by the assistant voice.
  Train and test use **disjoint topics and speakers** (paper §3.1 step 4).
* ``rl`` (schema ``prompt``): the train contents spoken again by other train speakers,
  labels dropped, for GRPO's unlabeled prompts (paper A.4).

Everything is derived from ``--seed``: the same seed gives the same sets.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import paras2s_pl
from paras2s_pl.audio.io import resample
from paras2s_pl.audio.tts import TTS, EspeakTTS
from paras2s_pl.data import labels
from paras2s_pl.data.schema import DemoMeta, PromptMeta
from paras2s_pl.data.seed import SeedItem, load_seed
from paras2s_pl.data.shards import ShardSetWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Utterance:
    """One sample to synthesise: what is said, how, by whom, and its reply."""

    key: str
    split: str
    item: SeedItem
    style: str
    speaker: str


def split_topics(items: list[SeedItem], test_fraction: float, rng: random.Random) -> set[str]:
    """Choose held-out test topics, disjoint from train topics across all categories.

    Categories share topic names (``Travel`` …), so a topic held out for one category is
    held out for all: about ``test_fraction`` of each category's topics, at least one,
    never all.
    """
    test: set[str] = set()
    train: set[str] = set()
    for category in sorted({i.category for i in items}):
        topics = sorted({i.topic for i in items if i.category == category})
        if len(topics) < 2:
            raise ValueError(
                f"category {category!r} has {len(topics)} topic(s); at least two "
                "are needed to hold out test topics"
            )
        want = min(max(1, math.ceil(len(topics) * test_fraction)), len(topics) - 1)
        free = [t for t in topics if t not in test and t not in train]
        rng.shuffle(free)
        have = [t for t in topics if t in test]
        chosen = free[: max(0, want - len(have))]
        if len(have) + len(chosen) == len(topics):  # keep at least one train topic
            chosen = chosen[:-1]
        test |= set(chosen)
        train |= {t for t in topics if t not in test}
        if not any(t in test for t in topics):
            raise ValueError(
                f"category {category!r}: all its topics are train topics of other "
                "categories; add topics or change --seed"
            )
    return test


def _speaker(split: str, style: str, rng: random.Random, avoid: str | None = None) -> str:
    pools = labels.SPEAKERS[split]
    pool = list(pools[style]) if style in pools else [s for names in pools.values() for s in names]
    if avoid in pool and len(pool) > 1:
        pool.remove(avoid)
    return rng.choice(pool)


def plan_utterances(
    items: list[SeedItem], contents_per_category: int | None, test_fraction: float, seed: int
) -> dict[str, list[Utterance]]:
    """Decide split, speaker and key of every sample, deterministically from ``seed``."""
    rng = random.Random(seed)
    held = split_topics(items, test_fraction, rng)
    plan: dict[str, list[Utterance]] = {"train": [], "test": [], "rl": []}
    for category in sorted({i.category for i in items}):
        pool = [i for i in items if i.category == category]
        rng.shuffle(pool)
        by_split = {
            s: [i for i in pool if (i.topic in held) == (s == "test")] for s in ("train", "test")
        }
        if contents_per_category is not None:  # keep the split ratio when shrinking
            n_test = max(1, round(contents_per_category * len(by_split["test"]) / len(pool)))
            by_split = {
                "test": by_split["test"][:n_test],
                "train": by_split["train"][: max(1, contents_per_category - n_test)],
            }
        for split, chosen in by_split.items():
            for item in sorted(chosen, key=lambda i: i.id):
                shared = _speaker(split, "any", rng)  # one voice speaks both styles of a pair
                for style in item.styles:
                    speaker = _speaker(split, style, rng) if category == "gender" else shared
                    plan[split].append(Utterance(f"{item.id}-{style}", split, item, style, speaker))
                    if split == "train":
                        plan["rl"].append(
                            Utterance(
                                "",
                                "rl",
                                item,
                                style,
                                _speaker(
                                    split,
                                    style if category == "gender" else "any",
                                    rng,
                                    avoid=speaker,
                                ),
                            )
                        )
    rng.shuffle(plan["rl"])  # RL keys carry no label: rl-000000 …
    plan["rl"] = [
        Utterance(f"rl-{n:06d}", u.split, u.item, u.style, u.speaker)
        for n, u in enumerate(plan["rl"])
    ]
    return plan


# --------------------------------------------------------------------- synthesis workers

_TTS: TTS | None = None


def _init_worker(tts: TTS) -> None:
    global _TTS
    _TTS = tts


def _synth(job: tuple[str, str, str | None, int]) -> np.ndarray | str:
    """Synthesise in a worker; returns audio at the target rate, or the error text."""
    text, style, speaker, rate = job
    assert _TTS is not None
    try:
        wav, sr = _TTS.synthesize(text, style=style, speaker=speaker)
    except ValueError as err:  # text the TTS cannot speak: skip and count, never crash
        return str(err)
    return resample(wav, sr, rate)


def _jobs(u: Utterance, rate: int, with_reply: bool) -> list[tuple[str, str, str | None, int]]:
    jobs = [(u.item.content, u.style, u.speaker, rate)]
    if with_reply:
        reply = u.item.responses[u.style]
        jobs.append((reply.text, reply.tone, labels.ASSISTANT_SPEAKER, rate))
    return jobs


def _synthesised(
    plan: list[Utterance], tts: TTS, rate: int, workers: int, with_reply: bool, desc: str
) -> Iterator[tuple[Utterance, list[np.ndarray | str]]]:
    jobs = [j for u in plan for j in _jobs(u, rate, with_reply)]
    per = 2 if with_reply else 1
    if workers > 1:
        pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(tts,))
        results = pool.map(_synth, jobs, chunksize=8)
    else:
        pool = None
        _init_worker(tts)
        results = map(_synth, jobs)
    try:
        bar = tqdm(total=len(plan), desc=desc, unit="sample")
        for u in plan:
            outs = [next(results) for _ in range(per)]
            bar.update()
            yield u, outs
        bar.close()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def build_demo(
    out: str | Path = "shards/demo",
    seed: int = 0,
    sample_rate: int = 16000,
    contents_per_category: int | None = None,
    test_fraction: float = 0.25,
    workers: int = 2,
    overwrite: bool = False,
    seed_files: list[str] | None = None,
    shard_size: int = 100,
    tts: TTS | None = None,
) -> dict[str, dict]:
    """Synthesise the demo sets; returns ``{split: manifest}`` (skips counted in each)."""
    start = time.time()
    tts = tts or EspeakTTS()
    items = load_seed(seed_files)
    plan = plan_utterances(items, contents_per_category, test_fraction, seed)
    provenance = {
        "command": "paras2s shards build-demo",
        "seed": seed,
        "contents_per_category": contents_per_category,
        "test_fraction": test_fraction,
        "tts": f"{type(tts).__module__}.{type(tts).__qualname__}",
        "seed_files": [str(p) for p in (seed_files or ["<package>"])],
        "version": paras2s_pl.__version__,
    }
    manifests: dict[str, dict] = {}
    for split, kind in (("train", "demo"), ("test", "demo"), ("rl", "prompt")):
        with ShardSetWriter(
            out,
            split,
            kind,
            sample_rate=sample_rate,
            overwrite=overwrite,
            maxcount=shard_size,
            provenance=provenance,
        ) as writer:
            for u, outs in _synthesised(
                plan[split],
                tts,
                sample_rate,
                workers,
                with_reply=kind == "demo",
                desc=f"build-demo {split}",
            ):
                errors = [o for o in outs if isinstance(o, str)]
                if errors:
                    writer.skip(u.key, "tts_failed", errors[0])
                    continue
                writer.write(u.key, _meta(u, kind), outs[0], outs[1] if kind == "demo" else None)
        manifests[split] = writer.manifest
    log.info("build-demo finished in %.1f s", time.time() - start)
    return manifests


def _meta(u: Utterance, kind: str) -> PromptMeta:
    if kind == "prompt":
        return PromptMeta(content=u.item.content, speaker=u.speaker, split=u.split)
    reply = u.item.responses[u.style]
    return DemoMeta(
        content=u.item.content,
        speaker=u.speaker,
        split=u.split,
        category=u.item.category,
        style=u.style,
        style_description=labels.STYLE_DESCRIPTIONS[u.style],
        topic=u.item.topic,
        pair_id=u.item.id,
        response_text=reply.text,
        response_tone=reply.tone,
    )
