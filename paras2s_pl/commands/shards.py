"""``paras2s shards …``: build the mini-world shards, inspect a shard split.

Run as ``paras2s shards build-demo --out shards/demo`` or
``paras2s shards inspect shards/demo --split train --limit 3``.
"""

from __future__ import annotations

from pathlib import Path


def build_demo(
    out: Path = Path("shards/demo"),
    seed: int = 0,
    sample_rate: int = 16000,
    contents_per_category: int | None = None,
    test_fraction: float = 0.25,
    workers: int = 2,
    overwrite: bool = False,
    seed_files: list[str] | None = None,
    shard_size: int = 100,
) -> None:
    """Synthesise the mini-world shards (train/test demos and unlabeled RL prompts).

    Args:
        out: Output directory; refuses to replace existing shards unless --overwrite.
        seed: Seed of topic split, speaker choice and order; the same seed gives the same sets.
        sample_rate: Rate the audio is stored at (Hz).
        contents_per_category: Use at most this many seed contents per category (default: all).
        test_fraction: Fraction of each category's topics held out for test.
        workers: Synthesis processes.
        overwrite: Replace existing shards in --out.
        seed_files: Seed JSONL files to use instead of the shipped ones.
        shard_size: Samples per shard (more shards spread better over workers and ranks).
    """
    from paras2s_pl.data.demo import build_demo
    from paras2s_pl.errors import UsageError

    for option, value, ok, want in (
        ("--contents_per_category", contents_per_category,
         contents_per_category is None or contents_per_category >= 1, "at least 1 (or none: all)"),
        ("--test_fraction", test_fraction, 0 < test_fraction < 1, "a fraction in (0, 1)"),
        ("--shard_size", shard_size, shard_size >= 1, "at least 1 sample per shard"),
        ("--sample_rate", sample_rate, 8000 <= sample_rate <= 384_000, "8000 to 384000 Hz"),
        ("--workers", workers, workers >= 1, "at least 1"),
    ):  # fmt: skip
        if not ok:
            raise UsageError(f"{option} {value}: give {want}")

    manifests = build_demo(
        out=out,
        seed=seed,
        sample_rate=sample_rate,
        contents_per_category=contents_per_category,
        test_fraction=test_fraction,
        workers=workers,
        overwrite=overwrite,
        seed_files=seed_files,
        shard_size=shard_size,
    )
    for split, m in manifests.items():
        print(
            f"{out}/{split}: {m['count']} samples, {m['hours'] * 60:.1f} min, "
            f"{len(m['shards'])} shard(s), skipped {sum(m['skipped'].values())}"
        )


def inspect(path: Path, split: str = "train", limit: int = 0) -> None:
    """Read a shard split end to end and print its manifest summary and read statistics.

    Args:
        path: Directory holding ``<split>.manifest.json``.
        split: Split to read.
        limit: Print the metadata of this many samples.
    """
    import json

    from paras2s_pl.data.shards import ShardDataset, read_manifest

    manifest = read_manifest(path, split)
    ds = ShardDataset(path, split=split)
    for n, sample in enumerate(ds):
        if n < limit:
            print(sample.key, json.dumps(sample.meta.__dict__, ensure_ascii=False))
    # a hand-made manifest may lack the summary fields: print what it has, not a KeyError
    fields = ("schema", "count", "hours", "label_balance", "speakers")
    summary = {k: manifest[k] for k in fields if k in manifest}
    print(json.dumps(summary, indent=2))
    print("read:", json.dumps(ds.stats.as_dict()))
