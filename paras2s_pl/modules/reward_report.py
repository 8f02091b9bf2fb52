"""Held-out report of a reward model: Pearson r with bootstrap 95 % CIs over query groups.

Overall, per category and within query:

* **overall** r: the reward model's expected score against the judge's score over all
  held-out pairs (what the paper's Fig. 2b reports).
* **within-query** r: the same after subtracting, per query, the mean prediction and the mean
  judge score of its K responses. GRPO only uses a reward through its group advantage
  (reward minus the group's mean over the G responses to one prompt), so this is the part of
  the correlation that can steer the policy; a model that only knows which queries are hard
  gets a high overall r and a within r near 0.
* **CIs**: percentile bootstrap over query *groups* (pair ids: a query and its
  contrasting-style twin share content and are resampled together), ``resamples`` draws from
  a seeded generator, so a report is reproducible. Each draw is a weighted Pearson r (the
  weights: how often each group was drawn); draws where one side is constant are dropped.

:func:`heldout_report` is pure numpy; :class:`~paras2s_pl.modules.reward.RewardModule` calls
it at each validation and writes the exported validation's report to ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CHUNK = 100  # bootstrap draws evaluated at once


def pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted Pearson r; ``weights`` (R, N) gives R values, None one. NaN when constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w = np.ones((1, x.size)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = (w @ x) / total, (w @ y) / total
        sxy = w @ (x * y) / total - mx * my
        sxx = w @ (x * x) / total - mx * mx
        syy = w @ (y * y) / total - my * my
        denom = np.sqrt(np.clip(sxx, 0, None) * np.clip(syy, 0, None))
        r = np.where(denom > 1e-12, sxy / np.where(denom > 1e-12, denom, 1.0), np.nan)
    r = np.clip(r, -1.0, 1.0)
    return r if weights is not None else r[0]


def center_by(values: np.ndarray, keys: Sequence[str]) -> np.ndarray:
    """``values`` minus the mean of the rows that share their key."""
    values = np.asarray(values, dtype=np.float64)
    _, inverse = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse)
    return values - (sums / counts)[inverse]


def _summary(point: float, draws: np.ndarray, n: int) -> dict[str, Any]:
    finite = draws[np.isfinite(draws)]
    ci = (
        [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]
        if finite.size >= 2 and np.isfinite(point)
        else None
    )
    return {"r": float(point) if np.isfinite(point) else None, "ci95": ci, "pairs": int(n)}


def heldout_report(
    predicted: Sequence[float],
    target: Sequence[float],
    categories: Sequence[str],
    groups: Sequence[str],
    queries: Sequence[str],
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Pearson r overall / within query, also per category, each with a bootstrap 95 % CI.

    Returns ``{"overall": s, "within": s, "categories": {cat: {"overall": s, "within": s}},
    "groups": G, "queries": Q, "pairs": N, "resamples": R}`` where ``s`` is
    ``{"r": float | None, "ci95": [low, high] | None, "pairs": n}``; ``resamples=0`` gives
    no CIs. ``groups`` is the bootstrap unit, ``queries`` the centering unit of *within*.
    """
    x = np.asarray(predicted, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    n = x.size
    if not (y.size == len(categories) == len(groups) == len(queries) == n):
        raise ValueError("heldout_report: every argument needs one entry per pair")
    xc, yc = center_by(x, queries), center_by(y, queries)
    names, group_of = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    # (R, G) how often each group is drawn; a pair then weighs as often as its group
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, names.size, size=(resamples if n else 0, names.size))
    counts = np.zeros(drawn.shape)
    np.add.at(counts, (np.arange(drawn.shape[0])[:, None], drawn), 1.0)

    def draws_of(a: np.ndarray, b: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, counts.shape[0], CHUNK):  # bounded memory: CHUNK x N weights
            out.append(pearson(a[rows], b[rows], counts[start : start + CHUNK][:, group_of[rows]]))
        return np.concatenate(out) if out else np.array([])

    def both(rows: np.ndarray) -> dict[str, Any]:
        out = {}
        for name, (a, b) in (("overall", (x, y)), ("within", (xc, yc))):
            enough = rows.sum() >= 2
            point = pearson(a[rows], b[rows]) if enough else np.nan
            draws = draws_of(a, b, rows) if enough else np.array([])
            out[name] = _summary(point, draws, int(rows.sum()))
        return out

    report: dict[str, Any] = both(np.ones(n, dtype=bool))
    cats = np.asarray(categories, dtype=object).astype(str)
    report["categories"] = {c: both(cats == c) for c in sorted(set(cats.tolist()))}
    report.update(
        groups=int(names.size), queries=int(len(set(queries))), pairs=int(n), resamples=resamples
    )
    return report
