r"""Annotation budgets: take SFT and reward-model queries from one annotated pool (Fig. 2b).

Both SFT demos and reward-model preferences need style-annotated queries (paper §5.4), so a
fixed pool of annotated speech is split between them. :func:`select_queries` takes a budget
(``num_queries`` and/or ``hours``) from a pool in a **seeded order of contrasting pairs**
(both styles of one content go together), after dropping an ``exclude`` list and skipping
``offset`` pairs. The same seed gives the same order, so two calls with disjoint exclusions
cut disjoint, reproducible budgets. Every selection is written as
``<out>/<split>.selection.json`` (keys, pair ids, hours, how it was made), which is itself a
valid ``--exclude`` for the next cut.

**The Fig. 2b split** (100 h pool in the paper; ``shards/demo`` in the mini world)::

    # 1. SFT gets the first 0.3 h of pairs (a subset shard set the SFT config can read)
    paras2s curate subset --pool shards/demo --split train --hours 0.3 --out shards/budget/sft
    # 2. the reward model gets the next 0.15 h: everything SFT took is excluded
    paras2s curate preferences --policy runs/mini/sft_policy --queries shards/demo \
        --exclude shards/budget/sft/train.selection.json --hours 0.15 --out shards/budget/prefs
    # 3. train SFT on the subset: configs/mini/sft.yaml with --data.init_args.root shards/budget/sft

(``SFTDataModule`` has no key filter, so the SFT side reads a subset copy written by
``curate subset``.) Sweep the SFT share with step 1's ``--hours`` and keep the total fixed.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from paras2s_pl.data.shards import ShardDataset, ShardSetWriter, read_manifest
from paras2s_pl.errors import BudgetError


@dataclass(frozen=True)
class PoolEntry:
    """One annotated query of a pool: its key, pair id and duration."""

    key: str
    pair_id: str
    seconds: float

    @property
    def group(self) -> str:
        """The unit of selection: the pair id, else the key."""
        return self.pair_id or self.key


def selection_path(out: str | Path, split: str) -> Path:
    """``<out>/<split>.selection.json``."""
    return Path(out) / f"{split}.selection.json"


def read_exclude(exclude: str | Path | Sequence[str] | None) -> set[str]:
    """Keys/pair ids to exclude, from a list, a ``*.selection.json`` or a text file.

    A text file holds one key or pair id per line (``#`` comments allowed); a JSON file is a
    selection (its ``keys`` and ``pair_ids``) or a plain list.
    """
    if exclude is None:
        return set()
    if isinstance(exclude, list | tuple | set):
        out: set[str] = set()
        for item in exclude:
            path = Path(str(item))
            out |= read_exclude(path) if path.is_file() else {str(item)}
        return out
    path = Path(exclude)
    if not path.is_file():
        raise FileNotFoundError(
            f"--exclude {path}: no such file; give a *.selection.json, a "
            "text file of keys/pair ids, or a list of them"
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            return set(data.get("keys", [])) | set(data.get("pair_ids", []))
        return {str(x) for x in data}
    return {line.split("#")[0].strip() for line in text.splitlines()} - {""}


def pool_entries(pool: str | Path, split: str, sample_rate: int = 16000) -> list[PoolEntry]:
    """Every labelled query of ``pool``/``split`` (reads the audio once for durations)."""
    ds = ShardDataset(pool, split=split, sample_rate=sample_rate)
    entries = [
        PoolEntry(s.key, getattr(s.meta, "pair_id", ""), s.duration)
        for s in tqdm(ds, desc=f"list {split}", unit="query", leave=False)
    ]
    if not entries:
        raise BudgetError(f"{pool}/{split}: no readable queries ({ds.stats.as_dict()})")
    return entries


def select_queries(
    entries: Iterable[PoolEntry],
    num_queries: int | None = None,
    hours: float | None = None,
    seed: int = 0,
    exclude: Iterable[str] = (),
    offset: int = 0,
) -> list[PoolEntry]:
    """Whole pairs in seeded order until ``num_queries`` queries or ``hours`` are reached.

    Entries whose key or pair id is in ``exclude`` are dropped first, then ``offset`` pairs
    are skipped. A pair that would overshoot a limit is not taken (the budget is a ceiling);
    with neither limit every remaining query is taken.
    """
    excluded = set(exclude)
    groups: dict[str, list[PoolEntry]] = {}
    for e in entries:
        if e.key not in excluded and e.group not in excluded:
            groups.setdefault(e.group, []).append(e)
    order = sorted(groups, key=lambda g: hashlib.sha1(g.encode()).hexdigest())
    random.Random(seed).shuffle(order)
    chosen: list[PoolEntry] = []
    n, seconds = 0, 0.0
    for group in order[offset:]:
        members = sorted(groups[group], key=lambda e: e.key)
        add_n, add_s = len(members), sum(e.seconds for e in members)
        if num_queries is not None and n + add_n > num_queries:
            break
        if hours is not None and seconds + add_s > hours * 3600:
            break
        chosen += members
        n, seconds = n + add_n, seconds + add_s
    return chosen


def selection_record(chosen: Sequence[PoolEntry], **how: Any) -> dict[str, Any]:
    """The json written as ``<split>.selection.json``."""
    return {
        "keys": [e.key for e in chosen],
        "pair_ids": sorted({e.pair_id for e in chosen if e.pair_id}),
        "queries": len(chosen),
        "hours": round(sum(e.seconds for e in chosen) / 3600, 4),
        "how": how,
    }


def subset(
    pool: str | Path,
    out: str | Path,
    split: str = "train",
    num_queries: int | None = None,
    hours: float | None = None,
    seed: int = 0,
    exclude: str | Path | Sequence[str] | None = None,
    offset: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Copy a budgeted selection of ``pool``/``split`` to a new shard set (same schema).

    Writes ``<out>/<split>-*.tar``, its manifest and ``<out>/<split>.selection.json``;
    returns the selection record.
    """
    manifest = read_manifest(pool, split)
    excluded = read_exclude(exclude)
    chosen = select_queries(pool_entries(pool, split), num_queries, hours, seed, excluded, offset)
    if not chosen:
        raise BudgetError(
            f"{pool}/{split}: the budget selects no query (num_queries="
            f"{num_queries}, hours={hours}, {len(excluded)} excluded)"
        )
    keys = {e.key for e in chosen}
    how = {
        "pool": str(pool),
        "split": split,
        "num_queries": num_queries,
        "hours": hours,
        "seed": seed,
        "offset": offset,
        "excluded": len(excluded),
    }
    provenance = {"command": "paras2s curate subset", **how}
    with ShardSetWriter(
        out,
        split,
        manifest["schema"],
        sample_rate=manifest["sample_rate"],
        overwrite=overwrite,
        provenance=provenance,
    ) as writer:
        for s in ShardDataset(pool, split=split, sample_rate=manifest["sample_rate"]):
            if s.key in keys:
                writer.write(s.key, s.meta, s.user_audio, s.assistant_audio)
    record = selection_record(chosen, **how)
    selection_path(out, split).write_text(json.dumps(record, indent=2) + "\n")
    return record
