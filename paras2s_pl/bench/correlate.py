"""Judge–human agreement: Pearson r (Table 2), rankings (Table 1), the annotation template.

Does the automatic judge agree with people? Pearson r per category (paper Table 2, §5.1),
system rankings side by side (Table 1), and the template annotators fill in.

Run::

    paras2s bench export-human --runs runs/bench --out human/template.csv
    # annotators fill annotator + score, one copy of the file each
    paras2s bench correlate --auto runs/bench --human human/alice.csv,human/bob.csv

**Human CSV** (UTF-8, header row, any extra columns ignored):

============ ==================================================================
column       meaning
============ ==================================================================
key          the test query's sample key (as in ``scores.jsonl``)
system       the system whose response was rated (a ``scores.jsonl`` system)
annotator    who rated it (any id; empty reads as ``anonymous``)
score        1..5 (MOS-style averages such as 3.5 are accepted); empty = not rated
============ ==================================================================

One row per (key, system, annotator). A pair rated by several annotators is represented
by their **mean** (the paper's three experts per pair); rows with an empty score are
skipped and counted. :func:`export_human_template` writes these columns plus
``category``, ``query_audio`` and ``response_audio`` (paths relative to the CSV).
Response files are named by an opaque id and rows are shuffled, so a listener cannot tell
the system from the file; hide the ``key``/``system`` columns when presenting.

**Statistics.** Pairs are joined on (system, key); only auto rows with status ``scored``
take part (the others are counted). Pearson r and its two-sided p-value come from
``scipy.stats.pearsonr`` per category and over all pairs ("All"); with fewer than 3 pairs
or a constant side r is reported as undefined. Table 1: per system and category the auto
and human means over the *same* joined pairs, their average over categories (unweighted,
as in :mod:`paras2s_pl.bench.tables`) and the rank of that average (1 = best; ties share
the lower rank); ``rank_changes`` counts systems ranked differently by the two.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from paras2s_pl.audio.io import encode_audio
from paras2s_pl.bench.backends import BenchError
from paras2s_pl.bench.responses import open_responses
from paras2s_pl.bench.tables import (
    CATEGORY_ORDER,
    DASH,
    fmt,
    load_runs,
    md_table,
    read_jsonl,
    system_order,
)
from paras2s_pl.data import labels
from paras2s_pl.data.shards import ShardDataset

HUMAN_COLUMNS = ("key", "system", "annotator", "score")
TEMPLATE_COLUMNS = (
    "key",
    "system",
    "category",
    "query_audio",
    "response_audio",
    "annotator",
    "score",
)
MIN_PAIRS = 3


def split_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Comma-separated string or sequence → paths."""
    if isinstance(paths, str | Path):
        paths = [p for p in str(paths).split(",") if p.strip()]
    return [Path(str(p).strip()) for p in paths]


def read_auto(paths: str | Sequence[str | Path]) -> list[dict[str, Any]]:
    """Rows of ``scores.jsonl`` files, or of every system under a runs directory."""
    rows: list[dict[str, Any]] = []
    for path in split_paths(paths):
        if path.is_dir():
            rows += [r for run in load_runs(path) for r in run.rows]
        elif path.exists():
            rows += [{"system": path.parent.name, **r} for r in read_jsonl(path)]
        else:
            raise FileNotFoundError(
                f"--auto {path} does not exist; give scores.jsonl files or a runs directory"
            )
    return rows


def read_human(
    paths: str | Sequence[str | Path],
) -> tuple[dict[tuple[str, str], list[float]], dict[str, int]]:
    """``{(system, key): [scores]}`` from human CSVs, and counts of rows read/skipped."""
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    counts = {"rows": 0, "unrated": 0}
    for path in split_paths(paths):
        if not path.exists():
            raise FileNotFoundError(f"--human {path} does not exist")
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in HUMAN_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise BenchError(
                    f"{path}: missing column(s) {missing}; the header needs "
                    f"{list(HUMAN_COLUMNS)} (see `paras2s bench export-human`)"
                )
            for line, row in enumerate(reader, 2):
                counts["rows"] += 1
                raw = (row["score"] or "").strip()
                if not raw:
                    counts["unrated"] += 1
                    continue
                try:
                    value = float(raw)
                except ValueError:
                    value = float("nan")
                if not 1 <= value <= 5:
                    raise BenchError(
                        f"{path}:{line}: field 'score' is {raw!r}; write a "
                        "number from 1 to 5 or leave it empty"
                    )
                scores[(row["system"].strip(), row["key"].strip())].append(value)
    return dict(scores), counts


def pearson(auto: Sequence[float], human: Sequence[float]) -> dict[str, Any]:
    """``{"r", "p", "n"}``; r and p are None when undefined (n < 3 or a constant side)."""
    n = len(auto)
    if n < MIN_PAIRS or np.ptp(auto) == 0 or np.ptp(human) == 0:
        return {"r": None, "p": None, "n": n}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.pearsonr(auto, human)
    return {"r": float(result.statistic), "p": float(result.pvalue), "n": n}


def ranks(values: dict[str, float | None]) -> dict[str, int | None]:
    """Rank 1 = highest; ties share the lower rank; None stays unranked."""
    known = sorted((v for v in values.values() if v is not None), reverse=True)
    return {s: None if v is None else known.index(v) + 1 for s, v in values.items()}


def correlate(
    auto_rows: Sequence[dict[str, Any]], human: dict[tuple[str, str], list[float]]
) -> dict[str, Any]:
    """Join on (system, key); Pearson per category and overall; Table 1 rankings."""
    joined = []
    auto_keys = set()
    unscored = 0
    for r in auto_rows:
        pair = (r["system"], r["key"])
        auto_keys.add(pair)
        if pair not in human:
            continue
        if r.get("status") != "scored":
            unscored += 1
            continue
        joined.append((r["system"], r["category"], float(r["score"]), float(np.mean(human[pair]))))
    cats = [c for c in CATEGORY_ORDER if any(j[1] == c for j in joined)]
    table2 = {
        c: pearson([j[2] for j in joined if j[1] == c], [j[3] for j in joined if j[1] == c])
        for c in cats
    }
    table2["all"] = pearson([j[2] for j in joined], [j[3] for j in joined])
    systems = sorted({j[0] for j in joined}, key=system_order)
    table1: dict[str, dict[str, Any]] = {}
    for s in systems:
        per = {c: [(a, h) for sy, cat, a, h in joined if sy == s and cat == c] for c in cats}
        means = {
            c: (float(np.mean([a for a, _ in v])), float(np.mean([h for _, h in v])))
            for c, v in per.items()
            if v
        }
        table1[s] = {
            "categories": means,
            "avg_auto": float(np.mean([m[0] for m in means.values()])),
            "avg_human": float(np.mean([m[1] for m in means.values()])),
        }
    auto_rank = ranks({s: t["avg_auto"] for s, t in table1.items()})
    human_rank = ranks({s: t["avg_human"] for s, t in table1.items()})
    for s in table1:
        table1[s].update(rank_auto=auto_rank[s], rank_human=human_rank[s])
    return {
        "categories": cats,
        "table2": table2,
        "table1": table1,
        "rank_changes": sum(auto_rank[s] != human_rank[s] for s in table1),
        "pairs": len(joined),
        "auto_unscored": unscored,
        "human_only": len(set(human) - auto_keys),
    }


def _p(value: float | None) -> str:
    return DASH if value is None else f"{value:.2g}"


def render_markdown(result: dict[str, Any]) -> str:
    """Table 2 (Pearson, p-value, n) and Table 1 (auto vs human means and ranks)."""
    cats = result["categories"]
    names = [c.capitalize() if c in labels.SYNTHETIC_CATEGORIES else c.upper() for c in cats]
    t2 = result["table2"]
    cols = [*cats, "all"]
    parts = [
        "## Judge–human correlation (Table 2 layout)",
        "",
        md_table(
            ["", *names, "All"],
            [
                ["Pearson", *(fmt(t2[c]["r"]) for c in cols)],
                ["p-value", *(_p(t2[c]["p"]) for c in cols)],
                ["pairs", *(str(t2[c]["n"]) for c in cols)],
            ],
        ),
    ]
    header = [
        "System",
        *(f"{n} {w}" for n in names for w in ("auto", "human")),
        "Avg auto",
        "Avg human",
    ]
    rows = []
    for s, t in result["table1"].items():
        cells = []
        for c in cats:
            m = t["categories"].get(c)
            cells += [DASH, DASH] if m is None else [f"{m[0]:.3f}", f"{m[1]:.3f}"]
        rows.append(
            [
                s,
                *cells,
                f"{t['avg_auto']:.3f} ({t['rank_auto']})",
                f"{t['avg_human']:.3f} ({t['rank_human']})",
            ]
        )
    parts += [
        "",
        "## System rankings (Table 1 layout)",
        "",
        md_table(header, rows),
        "",
        f"{result['pairs']} (system, query) pairs joined; rank changes: "
        f"{result['rank_changes']}; auto rows not scored (missing, parse failure, "
        f"error) with a human score: {result['auto_unscored']}; human rows with no "
        f"auto row: {result['human_only']}.",
    ]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------ human template
def opaque_id(system: str, key: str) -> str:
    """A file name that does not reveal the system."""
    return hashlib.sha1(f"{system}/{key}".encode()).hexdigest()[:12]


def export_human_template(
    runs: str | Path,
    out: str | Path,
    per_category: int | None = None,
    seed: int = 0,
    systems: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the annotation CSV and its audio (``<out stem>_audio/``) for the runs' systems.

    Args:
        runs: a runs directory (``<system>/scores.jsonl`` + ``summary.json``).
        out: the CSV to write.
        per_category: rate at most this many queries per category (the same queries for
            every system, chosen with ``seed``); None: all.
        seed: seed of the query choice and row shuffle.
        systems: only these systems (default: all under ``runs``).

    Returns:
        Counts: rows written, queries, systems, skipped (no response audio).
    """
    out = Path(out)
    audio_dir = out.parent / f"{out.stem}_audio"
    run_list = load_runs(runs, systems)
    rng = random.Random(seed)
    by_cat: dict[str, set[str]] = defaultdict(set)
    for run in run_list:
        for r in run.rows:
            by_cat[r["category"]].add(r["key"])
    keys = set()
    for _, ks in sorted(by_cat.items()):
        ks = sorted(ks)
        keys |= set(ks if per_category is None else rng.sample(ks, min(per_category, len(ks))))
    rows, skipped, queries_written = [], 0, set()
    (audio_dir / "responses").mkdir(parents=True, exist_ok=True)
    (audio_dir / "queries").mkdir(parents=True, exist_ok=True)
    for run in run_list:
        if not run.summary.get("testset") or not isinstance(run.summary.get("responses"), dict):
            raise BenchError(
                f"{Path(runs) / run.system}/summary.json lacks testset/responses; "
                "re-run `paras2s bench run` for this system"
            )
        source = open_responses(**run.summary["responses"])
        for sample in ShardDataset(run.summary["testset"], split=run.summary["split"]):
            if sample.key not in keys:
                continue
            got = source.get(sample.key)
            if got is None:
                skipped += 1
                continue
            query = audio_dir / "queries" / f"{sample.key}.flac"
            if sample.key not in queries_written:
                query.write_bytes(encode_audio(sample.user_audio, sample.sample_rate))
                queries_written.add(sample.key)
            response = audio_dir / "responses" / f"{opaque_id(run.system, sample.key)}.flac"
            response.write_bytes(encode_audio(*got))
            rows.append(
                {
                    "key": sample.key,
                    "system": run.system,
                    "category": sample.meta.category,
                    "query_audio": str(query.relative_to(out.parent)),
                    "response_audio": str(response.relative_to(out.parent)),
                    "annotator": "",
                    "score": "",
                }
            )
    rng.shuffle(rows)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=TEMPLATE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return {
        "rows": len(rows),
        "queries": len(queries_written),
        "systems": len(run_list),
        "skipped_no_audio": skipped,
        "csv": str(out),
        "audio": str(audio_dir),
    }


def write_result(result: dict[str, Any], out: str | Path | None) -> str:
    """Markdown of ``result``; with ``out``, also ``<out>.md`` and ``<out>.json``."""
    markdown = render_markdown(result)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(markdown, encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return markdown
