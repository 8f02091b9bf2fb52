"""Rescore a finished bench with the current rubric judge: each system's row, stored → now.

A bench run keeps every transcript and tone in ``<runs>/<system>/scores.jsonl``, so a
change to the rubric (``paras2s_pl/bench/rubric.py``, ``bench/coherence.py``) can be
measured on it without running ASR or the captioner again::

    python benchmarks/rescore_rubric.py /tmp/demo/bench [--examples 3]

Prints, per system, Table 3's category means and Overall as stored and as the current
rubric scores them, how many replies the coherence gate capped, and (``--examples``) a few
capped transcripts with their reason. Rows not scored (missing, errors) are left out, and
so are stored rows whose judge is not a rubric (their scores are the LLM's, not ours).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from paras2s_pl.bench import tables
from paras2s_pl.bench.coherence import gate
from paras2s_pl.bench.rubric import rubric_score
from paras2s_pl.data import labels


def rescore(rows: list[dict]) -> list[dict]:
    """The scored rows, each with the current rubric's ``score`` and ``reason``."""
    out = []
    for r in rows:
        if r.get("status") == "scored":
            score, reason = rubric_score(r["style"], r["transcript"] or "", r["tone"] or "",
                                         r["content"] or "")  # fmt: skip
            out.append({**r, "score": score, "reason": reason})
    return out


def fmt_row(name: str, before: dict, after: dict, gated: int, n: int) -> str:
    cells = [
        f"{tables.fmt(before[c], 2)} → {tables.fmt(after[c], 2)}"
        for c in (*sorted(labels.SYNTHETIC_CATEGORIES), "Overall")
    ]
    return f"| {name} | " + " | ".join(cells) + f" | {gated}/{n} |"


def main(argv: list[str] | None = None) -> None:
    """Print the stored vs current rubric table for one bench directory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a bench directory: <runs>/<system>/scores.jsonl")
    parser.add_argument("--examples", type=int, default=0, help="capped transcripts per system")
    args = parser.parse_args(argv)
    cols = [c.capitalize() for c in sorted(labels.SYNTHETIC_CATEGORIES)]  # Table 3 order
    print(f"| System | {' | '.join(cols)} | Overall | capped |")
    print("|---" * (len(cols) + 3) + "|")
    examples = []
    for run in tables.load_runs(args.runs):
        judge = run.summary.get("judge", {}).get("name", "rubric")
        if not judge.startswith("rubric"):
            print(f"| {run.system} | judged by {judge}, not the rubric: skipped |")
            continue
        stored = [r for r in run.rows if r.get("status") == "scored"]
        now = rescore(stored)
        capped = [r for r in now if gate(r["transcript"] or "", r["content"] or "")]
        before = dict(tables.category_means(stored), Overall=tables.table3_row(stored)["Overall"])
        after = dict(tables.category_means(now), Overall=tables.table3_row(now)["Overall"])
        print(fmt_row(run.system, before, after, len(capped), len(now)))
        old = {r["key"]: r["score"] for r in stored}
        examples += [capped_line(run.system, r, old[r["key"]]) for r in capped[: args.examples]]
    for line in examples:
        print(line)


def capped_line(system: str, row: dict, old: int) -> str:
    """One capped transcript: system, style, stored → new score, transcript, reason."""
    text = row["transcript"] if len(row["transcript"]) < 110 else row["transcript"][:107] + "…"
    return f"- {system}, {row['style']}: {old} → {row['score']} “{text}” ({row['reason']})"


if __name__ == "__main__":
    main()
