"""Bookkeeping of ``paras2s curate preferences``: selection, progress, merged manifest.

Files under ``--out`` for a split (see :mod:`paras2s_pl.curate.preferences`):
``<split>.selection.json`` (the chosen queries), ``<split>.progress.jsonl`` (one line per
finished query: part, scores, skips, seconds), ``<split>.partNNNNN-*.tar`` + their
manifests, and ``<split>.manifest.json``, the merged manifest readers open.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from paras2s_pl.curate.budget import (
    pool_entries,
    read_exclude,
    select_queries,
    selection_path,
    selection_record,
)
from paras2s_pl.data.shards import manifest_path, read_manifest
from paras2s_pl.errors import BudgetError

RATE = 16000


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_progress(out: Path, split: str) -> list[dict[str, Any]]:
    """Finished-query records of ``<split>.progress.jsonl`` (a line cut by a crash is ignored)."""
    path = out / f"{split}.progress.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_progress(out: Path, split: str, rows: Sequence[dict[str, Any]]) -> None:
    """Append finished-query records and fsync (the record of a finished part)."""
    path = out / f"{split}.progress.jsonl"
    if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        rows = [{}, *rows]  # end a line cut by a crash (the empty record is ignored)
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n" if row else "\n")
        f.flush()
        os.fsync(f.fileno())


def merged_manifest(
    out: Path,
    split: str,
    progress: Sequence[dict[str, Any]],
    selected: int,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """The readers' manifest of all finished parts, with score histograms per category."""
    parts = sorted({row["part"] for row in progress if "part" in row})
    merged: dict[str, Any] = {
        "split": split,
        "schema": "preference",
        "count": 0,
        "hours": 0.0,
        "sample_rate": RATE,
        "audio_format": "flac",
        "shards": [],
        "label_balance": {},
        "speakers": Counter(),
    }
    for part in parts:
        m = read_manifest(out, part)
        merged["count"] += m["count"]
        merged["hours"] += m["hours"]
        merged["shards"] += m["shards"]
        merged["speakers"].update(m["speakers"])
        for cat, styles in m["label_balance"].items():
            bal = merged["label_balance"].setdefault(cat, Counter())
            bal.update(styles)
    by_cat: dict[str, Counter] = {}
    skipped: Counter = Counter()
    for row in progress:
        if "key" in row:
            by_cat.setdefault(row["category"], Counter()).update(str(s) for s in row["scores"])
            skipped.update(row.get("skipped", {}))
    overall = sum(by_cat.values(), Counter())
    done = sum(1 for row in progress if "key" in row)
    seconds = [row["seconds"] for row in progress if "seconds" in row]
    merged.update(
        hours=round(merged["hours"], 4),
        mean_seconds=round(merged["hours"] * 3600 / max(merged["count"], 1), 3),
        label_balance={
            c: dict(sorted(v.items())) for c, v in sorted(merged["label_balance"].items())
        },
        speakers=dict(sorted(merged["speakers"].items())),
        score_histogram=dict(sorted(overall.items())),
        score_histogram_by_category={c: dict(sorted(h.items())) for c, h in sorted(by_cat.items())},
        mean_score_by_category={
            c: round(sum(int(s) * n for s, n in h.items()) / max(sum(h.values()), 1), 3)
            for c, h in sorted(by_cat.items())
        },
        queries={"selected": selected, "done": done, "pending": selected - done},
        skipped=dict(sorted(skipped.items())),
        seconds_per_query=round(float(np.mean(seconds)), 3) if seconds else None,
        parts=parts,
        provenance=provenance,
    )
    atomic_write(manifest_path(out, split), json.dumps(merged, indent=2, ensure_ascii=False))
    return merged


def load_selection(
    queries: Path, split: str, out: Path, how: dict[str, Any], exclude, overwrite: bool
) -> list[str]:
    """The selected query keys: computed once and saved, then reused by every rerun.

    A rerun may raise the budget (``num_queries``/``hours``): the seeded order makes the
    larger selection a superset, and the finished queries are kept. Any other change
    (pool, seed, exclusions, offset) needs ``--overwrite``.
    """
    path = selection_path(out, split)
    saved = json.loads(path.read_text()) if path.exists() and not overwrite else None
    if saved is not None and saved.get("how") == how:
        return saved["keys"]
    budget = ("num_queries", "hours")
    same_pool = saved is not None and all(
        saved["how"].get(k) == v for k, v in how.items() if k not in budget
    )
    if saved is not None and not same_pool:
        raise FileExistsError(
            f"{path} was made with {saved.get('how')}, not {how}; rerun with the same "
            "arguments to resume, or pass --overwrite to start again"
        )
    excluded = read_exclude(exclude)
    chosen = select_queries(
        pool_entries(queries, split),
        how["num_queries"],
        how["hours"],
        how["seed"],
        excluded,
        how["offset"],
    )
    if not chosen:
        raise BudgetError(
            f"{queries}/{split}: the budget selects no query (num_queries={how['num_queries']}, "
            f"hours={how['hours']}, offset={how['offset']}, {len(excluded)} excluded)"
        )
    keys = [e.key for e in chosen]
    if saved is not None and not set(saved["keys"]) <= set(keys):
        raise FileExistsError(
            f"{path}: the new budget ({how['num_queries']} queries, {how['hours']} h) does not "
            f"contain the {len(saved['keys'])} queries already selected; only a larger budget "
            "can resume, or pass --overwrite"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(selection_record(chosen, **how), indent=2) + "\n")
    return keys


def reset(out: Path, split: str) -> None:
    """--overwrite: remove this split's parts, progress, selection and manifest."""
    for path in out.glob(f"{split}.part*"):
        path.unlink()
    for name in ("progress.jsonl", "perception.jsonl", "selection.json", "manifest.json"):
        (out / f"{split}.{name}").unlink(missing_ok=True)
