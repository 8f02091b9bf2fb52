"""Instant stand-ins for the bench's ``C`` (ASR) and ``S`` (style captioner) in tests.

Deterministic, so a rerun builds the same judge prompts (``test_bench.py``, also imported
by its crash-test subprocess).
"""

from __future__ import annotations


class LenASR:
    """Stub ``C``: the transcript says how long the audio is; counts what it transcribed."""

    name = "len-asr"

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, wavs, sample_rate):
        self.calls += len(wavs)
        return [f"a reply of {len(w)} samples" for w in wavs]


class FixedCaptioner:
    """Stub ``S``: every response sounds neutral."""

    name = "fixed-tone"

    def describe(self, wavs, sample_rate):
        return ["neutral (female voice)"] * len(wavs)


def score_rows(system: str, pairs: dict[str, list[tuple[float | None, float | None]]]) -> list:
    """``scores.jsonl`` rows of contrasting pairs: per category, ``(score, score)`` of a pair's
    two styles (None: the query is missing)."""
    from paras2s_pl.data import labels

    rows = []
    for category, scores in pairs.items():
        for i, pair in enumerate(scores):
            pair_id = f"{category}-{i:03d}"
            for style, score in zip(labels.STYLES[category][:2], pair, strict=True):
                status = "missing" if score is None else "scored"
                row = dict(key=f"{pair_id}-{style}", system=system, category=category)
                rows.append({**row, "style": style, "pair_id": pair_id, "score": score,
                             "status": status})  # fmt: skip
    return rows


def write_runs(runs, systems: dict[str, list]) -> None:
    """``<runs>/<system>/scores.jsonl`` of each system's rows."""
    import json

    for system, rows in systems.items():
        (runs / system).mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (runs / system / "scores.jsonl").write_text(text, encoding="utf-8")
