"""Bench tables from one or more systems' ``scores.jsonl``: Table 3 and its companions.

:func:`load_runs` reads every ``<runs>/<system>/scores.jsonl`` (and ``summary.json``);
:func:`build_tables` computes, :func:`render_markdown` renders; :func:`write_tables`
writes ``<runs>/table.md`` and ``<runs>/table.json``. Run ``paras2s bench table --runs
runs/bench`` (``bench run`` does it after scoring).

* **Table 3** (paper §5.6): rows = systems; columns Age, Emotion, Gender, Sarcasm,
  Synthetic avg, IEMOCAP, MELD, Real avg, Overall. A cell is the mean judge score over
  the category's *scored* rows; a category without one shows "–". *Synthetic avg* is the
  unweighted mean of the available synthetic category means, *Real avg* likewise for
  IEMOCAP/MELD, and *Overall* the unweighted mean of all available category means (not
  of the two averages). Recomputed from the paper's own category columns this gives its
  Avg column to ±0.003 for 10 of the 11 rows of Table 3 (baseline 3.178 vs 3.176
  printed, topline 4.726 vs 4.725); GRPO is the exception (4.347 vs 4.382). Unweighted:
  a category's weight should not depend on how many queries it happens to have.
* **Counts**: per system, the judge (with a note when it is the rubric stand-in for the
  LLM judge), queries, scored, missing responses, parse failures, errors — rows that are
  never averaged in.
* **Per style**: mean (n scored) of every (category, style) label per system.
* **Contrasting pairs**: per system and category, among pairs (same ``pair_id``) whose
  two styles were both scored: *style-aware* = both ≥ 4; *one-sided* = one ≥ 4 and the
  other ≤ 2 — the system answered both styles the same way, which suits one and fails
  the other (paper footnote 16: "5 for one response and 1 for the other").
* **Paired comparisons** (when asked, ``--compare a:b`` / ``--against sft``): Overall(a) −
  Overall(b) on the queries scored by both, with a 95 % bootstrap CI resampling
  contrasting pairs within category (:mod:`paras2s_pl.bench.compare`).

Systems are ordered as in the paper: ``baseline`` first, ``topline`` last, the rest by
name in between.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from paras2s_pl.bench.compare import N_RESAMPLES, Comparison, compare_runs, parse_pairs
from paras2s_pl.data import labels
from paras2s_pl.jsonl import read_jsonl

DASH = "–"
HIGH, LOW = 4, 2  # pair analysis thresholds
TABLE3_COLUMNS = (
    "Age",
    "Emotion",
    "Gender",
    "Sarcasm",
    "Synthetic avg",
    "IEMOCAP",
    "MELD",
    "Real avg",
    "Overall",
)
COLUMN_CATEGORY = {
    "Age": "age",
    "Emotion": "emotion",
    "Gender": "gender",
    "Sarcasm": "sarcasm",
    "IEMOCAP": "iemocap",
    "MELD": "meld",
}
#: Category order of Table 3 (also used for the per-style and pair tables).
CATEGORY_ORDER = tuple(COLUMN_CATEGORY.values())
STAND_IN_NOTE = (
    "rubric stand-in for the LLM judge (paper: GPT-4.1): offline rules, not "
    "comparable to the paper's numbers"
)


@dataclass
class SystemRun:
    """One system's rows (from ``scores.jsonl``) and its ``summary.json`` (may be empty)."""

    system: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def judge(self) -> dict[str, Any]:
        """The judge entry of the summary (name, stand_in), or unknown."""
        return self.summary.get("judge") or {"name": "unknown", "stand_in": False}


def system_order(name: str) -> tuple[int, str]:
    """Sort key: baseline first, topline last, others by name."""
    return ({"baseline": 0, "topline": 2}.get(name, 1), name)


def load_runs(runs: str | Path, systems: Sequence[str] | None = None) -> list[SystemRun]:
    """Every ``<runs>/<system>/scores.jsonl`` (only ``systems`` when given), paper order."""
    runs = Path(runs)
    paths = sorted(runs.glob("*/scores.jsonl"))
    if not paths:
        raise FileNotFoundError(
            f"no <system>/scores.jsonl under {runs}; run `paras2s bench run --out` there first"
        )
    out = []
    for path in paths:
        if systems and path.parent.name not in systems:
            continue
        summary_path = path.parent / "summary.json"
        summary = json.loads(summary_path.read_text("utf-8")) if summary_path.exists() else {}
        out.append(SystemRun(path.parent.name, read_jsonl(path), summary))
    return sorted(out, key=lambda r: system_order(r.system))


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def category_means(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Mean score of scored rows per category (None when a category has none)."""
    scores: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "scored":
            scores[r["category"]].append(r["score"])
    return {c: _mean(scores.get(c, [])) for c in labels.CATEGORIES}


def table3_row(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Table 3 columns for one system (averages as in the module docstring)."""
    means = category_means(rows)
    row = {col: means[cat] for col, cat in COLUMN_CATEGORY.items()}

    def avg(cats: Sequence[str]) -> float | None:
        return _mean([means[c] for c in cats if means[c] is not None])

    row["Synthetic avg"] = avg(labels.SYNTHETIC_CATEGORIES)
    row["Real avg"] = avg(labels.REAL_CATEGORIES)
    row["Overall"] = avg(labels.CATEGORIES)
    return {col: row[col] for col in TABLE3_COLUMNS}


def counts(run: SystemRun) -> dict[str, Any]:
    """Queries and rows per status, with the judge name and stand-in flag."""
    statuses = defaultdict(int)
    for r in run.rows:
        statuses[r.get("status", "error")] += 1
    return {
        "judge": run.judge.get("name"),
        "stand_in": bool(run.judge.get("stand_in")),
        "queries": len(run.rows),
        **{s: statuses.get(s, 0) for s in ("scored", "missing", "parse_failed", "error")},
    }


def per_style(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{category: {style: {"mean", "n"}}}`` over scored rows."""
    scores: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "scored":
            scores[(r["category"], r["style"])].append(r["score"])
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (cat, style), s in sorted(scores.items()):
        out[cat][style] = {"mean": _mean(s), "n": len(s)}
    return dict(out)


def pair_analysis(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per category: complete pairs, style-aware (both ≥ 4) and one-sided (≥ 4 / ≤ 2) rates."""
    pairs: dict[tuple[str, str], dict[str, int | None]] = defaultdict(dict)
    for r in rows:
        if r.get("pair_id"):
            pairs[(r["category"], r["pair_id"])][r["style"]] = (
                r["score"] if r.get("status") == "scored" else None
            )
    out: dict[str, dict[str, Any]] = {}
    for cat in CATEGORY_ORDER:
        groups = [v for (c, _), v in pairs.items() if c == cat]
        complete = [sorted(v.values()) for v in groups if len(v) == 2 and None not in v.values()]
        if not groups:
            continue
        n = len(complete)
        aware = sum(lo >= HIGH for lo, _ in complete)
        one_sided = sum(lo <= LOW and hi >= HIGH for lo, hi in complete)
        out[cat] = {
            "pairs": n,
            "incomplete": len(groups) - n,
            "style_aware": aware / n if n else None,
            "one_sided": one_sided / n if n else None,
        }
    return out


def build_tables(
    runs: Sequence[SystemRun], comparisons: Sequence[Comparison] = ()
) -> dict[str, Any]:
    """Everything :func:`render_markdown` shows, as JSON-ready data."""
    stand_ins = sorted({r.judge.get("name") for r in runs if r.judge.get("stand_in")})
    notes = [f"{name}: {STAND_IN_NOTE}" for name in stand_ins]
    judges = sorted({str(r.judge.get("name")) for r in runs})
    if len(judges) > 1:
        notes.append(
            f"systems were scored by different judges ({', '.join(judges)}): rows "
            "are not comparable"
        )
    return {
        "columns": list(TABLE3_COLUMNS),
        "systems": [r.system for r in runs],
        "table3": {r.system: table3_row(r.rows) for r in runs},
        "counts": {r.system: counts(r) for r in runs},
        "per_style": {r.system: per_style(r.rows) for r in runs},
        "pairs": {r.system: pair_analysis(r.rows) for r in runs},
        "comparisons": [c.as_dict() for c in comparisons],
        "notes": notes,
    }


# ------------------------------------------------------------------------------- markdown
def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or the dash for no value."""
    return DASH if value is None else f"{value:.{digits}f}"


def pct(value: float | None) -> str:
    """A fraction as a whole percentage, or the dash."""
    return DASH if value is None else f"{100 * value:.0f} %"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def render_markdown(tables: dict[str, Any]) -> str:
    """Table 3, counts, per-style breakdown and pair analysis as markdown."""
    systems = tables["systems"]
    parts = [
        "## ParaS2SBench scores (Table 3 layout)",
        "",
        md_table(
            ["System", *tables["columns"]],
            [[s, *(fmt(tables["table3"][s][c]) for c in tables["columns"])] for s in systems],
        ),
    ]
    parts += [
        "",
        "Means over scored rows only; missing responses, parse failures and errors "
        "are counted below, never averaged in. Averages are unweighted means of the "
        "category means.",
    ]
    parts += [f"\n> **Note** — {note}." for note in tables["notes"]]
    parts += [
        "",
        "### Counts",
        "",
        md_table(
            ["System", "Judge", "Queries", "Scored", "Missing", "Parse failures", "Errors"],
            [
                [
                    s,
                    c["judge"] + (" (stand-in)" if c["stand_in"] else ""),
                    *(str(c[k]) for k in ("queries", "scored", "missing", "parse_failed", "error")),
                ]
                for s, c in tables["counts"].items()
            ],
        ),
    ]
    keys = sorted(
        {(cat, style) for s in systems for cat, d in tables["per_style"][s].items() for style in d},
        key=lambda k: (CATEGORY_ORDER.index(k[0]), labels.STYLES[k[0]].index(k[1])),
    )

    def cell(s: str, cat: str, style: str) -> str:
        got = tables["per_style"][s].get(cat, {}).get(style)
        return DASH if got is None else f"{got['mean']:.2f} ({got['n']})"

    parts += [
        "",
        "### Per style (mean, n scored)",
        "",
        md_table(
            ["Category", "Style", *systems],
            [[cat, style, *(cell(s, cat, style) for s in systems)] for cat, style in keys],
        ),
    ]
    pair_rows = [
        [s, cat, str(p["pairs"]), pct(p["style_aware"]), pct(p["one_sided"]), str(p["incomplete"])]
        for s in systems
        for cat, p in tables["pairs"][s].items()
    ]
    parts += [
        "",
        "### Contrasting pairs",
        "",
        f"Style-aware: both styles of a pair score ≥ {HIGH}. One-sided: one ≥ {HIGH}, "
        f"the other ≤ {LOW} (the same answer to both styles). Incomplete: a style "
        "missing or unscored.",
        "",
        md_table(
            ["System", "Category", "Pairs", "Style-aware", "One-sided", "Incomplete"], pair_rows
        ),
    ]
    parts += render_comparisons(tables.get("comparisons", []))
    return "\n".join(parts) + "\n"


def render_comparisons(comparisons: Sequence[dict[str, Any]]) -> list[str]:
    """The paired comparisons' section (no lines without one)."""
    if not comparisons:
        return []
    first = comparisons[0]
    rows = [
        [
            f"{c['a']} − {c['b']}",
            f"{c['difference']:+.3f}",
            f"[{c['low']:+.3f}, {c['high']:+.3f}]",
            f"{c['se']:.3f}",
            str(c["pairs"]),
            str(c["dropped"]),
            c["verdict"],
        ]
        for c in comparisons
    ]
    return [
        "",
        "### Paired comparisons (Overall)",
        "",
        f"Difference of Overall on the queries scored by both; {100 * first['confidence']:.0f} % "
        f"percentile interval and SE of a bootstrap ({first['n_resamples']} resamples, seed "
        f"{first['seed']}) drawing contrasting pairs with replacement within each category. "
        "No difference: the interval holds 0.",
        "",
        md_table(
            ["Comparison", "Difference", "CI", "SE", "Pairs", "Dropped queries", "Verdict"], rows
        ),
    ]


def write_tables(
    runs_dir: str | Path,
    systems: Sequence[str] | None = None,
    compare: str | None = None,
    against: str | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> tuple[str, dict]:
    """Build from ``runs_dir``, write ``table.md`` and ``table.json`` there; return both.

    ``compare`` (``"a:b,c:d"``) and ``against`` (a system) ask for paired comparisons,
    see :func:`paras2s_pl.bench.compare.parse_pairs`.
    """
    runs = load_runs(runs_dir, systems)
    pairs = parse_pairs(compare, against, [r.system for r in runs])
    tables = build_tables(runs, compare_runs(runs_dir, pairs, n_resamples, seed))
    markdown = render_markdown(tables)
    runs_dir = Path(runs_dir)
    (runs_dir / "table.md").write_text(markdown, encoding="utf-8")
    (runs_dir / "table.json").write_text(
        json.dumps(tables, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return markdown, tables
