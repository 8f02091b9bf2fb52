"""Sweep results: ``paras2s sweep``'s ``results.json`` read, ``ablations.ipynb``'s figures drawn.

The notebook shows the paper's Figs. 2a, 2b and 3.

Each run's **score** is its bench ``Overall`` and, where the run has no bench table, its
final ``train/reward`` (``score_source`` says which); axis labels say when the fallback is
used and such points are drawn hollow::

    runs = load_results("runs/sweep_a,runs/sweep_b")      # failed runs dropped
    fig = plot_hyperparameters(runs)                        # the paper's Fig. 3
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from paras2s_pl.plots.common import no_data, resolve

SWEEP_COMMAND = "paras2s sweep"

#: Swept keys of the paper's Fig. 3 (LightningCLI names), with their axis labels.
FIG3_PARAMS: dict[str, str] = {
    "data.init_args.batch_size": "batch size B (prompts per rollout)",
    "model.init_args.group_size": "group size G (responses per prompt)",
    "model.init_args.beta": "KL coefficient β",
}
#: How the stage tag reads in legends.
STAGE_LABELS = {"sft": "SFT only", "grpo": "SFT + GRPO", "reward": "reward model"}
#: Columns of :func:`load_results` present even when no run was found.
RUN_COLUMNS = (
    "results",
    "name",
    "status",
    "ok",
    "stage",
    "score",
    "score_source",
    "params",
    "tags",
)


def find_results(spec: str | Path | Iterable[str | Path]) -> list[Path]:
    """The ``results.json`` files named by ``spec``.

    ``spec`` is comma-separated paths (or a list), each a results file or a folder holding
    one (else every ``results.json`` below it is taken).

    Raises:
        FileNotFoundError: a path without results, with the command that writes them.
    """
    if isinstance(spec, str):
        spec = [s for s in spec.split(",") if s.strip()]
    elif isinstance(spec, Path):
        spec = [spec]
    found: list[Path] = []
    for item in spec:
        path = resolve(str(item).strip())
        if path.is_file():
            files = [path]
        elif (path / "results.json").is_file():
            files = [path / "results.json"]
        else:
            files = sorted(path.rglob("results.json")) if path.is_dir() else []
        if not files:
            raise FileNotFoundError(
                f"no results.json at {path}: run `{SWEEP_COMMAND} --config ...` (it writes "
                "<dir>/results.json) or point PARAS2S_SWEEP_RESULTS at one"
            )
        found.extend(f for f in files if f not in found)
    if not found:
        raise FileNotFoundError(f"no sweep results given: run `{SWEEP_COMMAND}`")
    return found


#: Run statuses without results: a failed run, a point of a ``--dry_run`` plan.
NOT_DONE = ("failed", "planned")


def _is_ok(run: dict[str, Any]) -> bool:
    """A finished run: ``ok``, or ``skipped-done`` (finished by an earlier invocation)."""
    return run.get("status") not in NOT_DONE and run.get("returncode") in (None, 0)


def _run_row(run: dict[str, Any], sweep: dict[str, Any], source: Path) -> dict[str, Any]:
    tags = {**(sweep.get("tags") or {}), **(run.get("tags") or {})}
    metrics = run.get("metrics") or {}
    bench = run.get("bench") or {}
    score, score_source = bench.get("Overall"), "bench"
    if score is None:
        score, score_source = metrics.get("train/reward"), "train/reward"
    if score is None:
        score_source = None
    row = {
        "results": str(source),
        "config": sweep.get("config"),
        "name": run.get("name"),
        "status": run.get("status"),
        "ok": _is_ok(run),
        "stage": tags.get("stage") or sweep.get("stage"),
        "seconds": run.get("seconds"),
        "global_step": run.get("global_step"),
        "run_dir": run.get("run_dir"),
        "score": float(score) if score is not None else math.nan,
        "score_source": score_source,
        "params": dict(run.get("params") or {}),
        "tags": tags,
    }
    row.update({f"param/{k}": v for k, v in (run.get("params") or {}).items()})
    row.update({f"tag/{k}": v for k, v in tags.items()})
    row.update({f"bench/{k}": v for k, v in bench.items()})
    row.update({f"metric/{k}": v for k, v in metrics.items()})
    return row


def load_results(
    spec: str | Path | Iterable[str | Path], include_failed: bool = False
) -> pd.DataFrame:
    """One row per run of every sweep in ``spec`` (see :func:`find_results`), concatenated.

    Columns: ``results`` (its file), ``config``, ``name``, ``status``, ``ok``, ``stage`` (the
    run's ``stage`` tag, else the file's), ``seconds``, ``global_step``, ``run_dir``, ``score``
    and ``score_source`` (bench Overall, else the final ``train/reward``), ``params`` and
    ``tags`` (dicts), and flat ``param/<key>``, ``tag/<name>``, ``bench/<column>`` and
    ``metric/<name>`` columns. Runs without results (``status`` ``failed`` or ``planned``, or a
    non-zero ``returncode``) are dropped unless ``include_failed``; ``ok`` and
    ``skipped-done`` (collected from an earlier invocation of the sweep) are kept.
    """
    rows = []
    for path in find_results(spec):
        sweep = json.loads(path.read_text())
        rows.extend(_run_row(run, sweep, path) for run in sweep.get("runs", []))
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=list(RUN_COLUMNS))
    if not include_failed:
        frame = frame[frame["ok"].astype(bool)].reset_index(drop=True)
    return frame


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """A compact view: name, stage, status, swept params, tags, score and its source."""
    flat = [c for c in runs.columns if c.startswith(("param/", "tag/")) and c != "tag/stage"]
    cols = ["name", "stage", "status", *flat, "score", "score_source", "seconds"]
    return runs[[c for c in cols if c in runs.columns]]


def swept_params(runs: pd.DataFrame) -> list[str]:
    """Parameter keys (without ``param/``) taking more than one value across ``runs``."""
    keys = []
    for col in runs.columns:
        if col.startswith("param/") and runs[col].dropna().astype(str).nunique() > 1:
            keys.append(col[len("param/") :])
    return keys


def _normal(key: str) -> str:
    return key.replace(".init_args.", ".")


def param_values(runs: pd.DataFrame, key: str) -> pd.Series:
    """The value of parameter ``key`` per run (NaN where not set).

    ``model.group_size`` and ``model.init_args.group_size`` count as the same key.
    """
    cols = [c for c in runs.columns if c.startswith("param/") and _normal(c[6:]) == _normal(key)]
    values = pd.Series(np.nan, index=runs.index, dtype=object)
    for col in cols:
        values = values.where(values.notna(), runs[col])
    return values


def metric_label(runs: pd.DataFrame, metric: str = "score") -> str:
    """Axis label for ``metric``; for ``score`` it names the fallback to ``train/reward``."""
    if metric != "score":
        return metric.split("/", 1)[-1] if metric.startswith(("bench/", "metric/")) else metric
    sources = set(runs["score_source"].dropna()) if "score_source" in runs else set()
    if sources == {"train/reward"}:
        return "final train/reward (no bench results)"
    if "train/reward" in sources:
        return "bench Overall (hollow: train/reward, no bench)"
    return "bench Overall"


def _numeric(values: pd.Series) -> pd.Series | None:
    out = pd.to_numeric(values, errors="coerce")
    return out if out.notna().all() else None


def _points(
    ax: Axes, x: pd.Series, y: pd.Series, fallback: pd.Series, label: str | None, color: str
) -> None:
    """Every run as a point (hollow where scored by train/reward), a line through the means."""
    frame = pd.DataFrame({"x": x, "y": y, "fallback": fallback}).dropna(subset=["x", "y"])
    if frame.empty:
        return
    for hollow, part in frame.groupby("fallback"):
        ax.scatter(
            part["x"],
            part["y"],
            s=28,
            zorder=3,
            edgecolors=color,
            facecolors="none" if hollow else color,
        )
    means = frame.groupby("x")["y"].agg(["mean", "std"]).sort_index()
    ax.errorbar(
        means.index,
        means["mean"],
        yerr=means["std"].fillna(0),
        color=color,
        capsize=3,
        label=label,
        marker="",
    )


def plot_sweep(
    ax: Axes,
    runs: pd.DataFrame,
    x: pd.Series,
    title: str,
    xlabel: str,
    metric: str = "score",
    hue: pd.Series | None = None,
    hue_labels: dict[str, str] | None = None,
) -> bool:
    """Draw ``metric`` against ``x`` on ``ax``, one line per ``hue`` value.

    ``x`` has one value per run (NaN: not in this panel). Numeric ``x`` is drawn on a numeric
    axis (log 2 when its positive values span a factor of 8 or more), anything else as
    categories. Returns False (and titles the panel "no runs") when no run has a value.
    """
    keep = x.notna() & runs[metric].notna() if metric in runs else pd.Series(False, x.index)
    runs, x = runs[keep], x[keep]
    ax.set_xlabel(xlabel)
    if runs.empty:
        ax.set_title(f"{title} (no runs)")
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes, color="grey")
        return False
    ax.set_ylabel(metric_label(runs, metric))
    numeric = _numeric(x)
    if numeric is None:
        order = sorted(x.astype(str).unique())
        xs = x.astype(str).map({v: i for i, v in enumerate(order)}).astype(float)
        ax.set_xticks(range(len(order)), order)
    else:
        xs = numeric.astype(float)
        if (xs > 0).all() and xs.max() / xs.min() >= 8:
            ax.set_xscale("log", base=2)
        values = sorted(xs.unique())
        if len(values) <= 8:
            ax.set_xticks(values, [f"{v:g}" for v in values])
    y = runs[metric].astype(float)
    fallback = pd.Series(False, index=y.index)
    if metric == "score":
        fallback = runs["score_source"] == "train/reward"
    groups = hue[keep].fillna("?").astype(str) if hue is not None else pd.Series("", x.index)
    names = sorted(groups.unique(), key=lambda g: (g not in (hue_labels or {}), g))
    for i, name in enumerate(names):
        sel = groups == name
        label = (hue_labels or {}).get(name, name) or None
        _points(ax, xs[sel], y[sel], fallback[sel], label, f"C{i}")
    ax.set_title(f"{title} ({len(runs)} runs)")
    ax.grid(alpha=0.3)
    if any(names):
        ax.legend(fontsize="small")
    return True


def plot_hyperparameters(
    runs: pd.DataFrame, metric: str = "score", stage: str | None = "grpo"
) -> Figure:
    """The paper's Fig. 3: ``metric`` against batch size B, group size G and β.

    Each panel takes the runs whose params set that key (and whose stage is ``stage`` or
    unknown; ``None``: any stage); several runs at one value give a mean ± std.
    """
    if stage is not None and "stage" in runs:
        runs = runs[runs["stage"].isna() | (runs["stage"] == stage)]
    fig, axes = plt.subplots(1, len(FIG3_PARAMS), figsize=(5 * len(FIG3_PARAMS), 3.8))
    for ax, (key, label) in zip(np.atleast_1d(axes), FIG3_PARAMS.items(), strict=True):
        plot_sweep(ax, runs, param_values(runs, key), label.split(" (")[0], label, metric)
    fig.tight_layout()
    return fig


def _tag_values(runs: pd.DataFrame, name: str) -> pd.Series:
    col = f"tag/{name}"
    if col not in runs:
        return pd.Series(np.nan, index=runs.index, dtype=float)
    return pd.to_numeric(runs[col], errors="coerce")


def plot_sft_data(runs: pd.DataFrame, metric: str = "score") -> Figure:
    """The paper's Fig. 2a: ``metric`` against hours of SFT data (tag ``sft_hours``).

    One line for SFT only (stage ``sft``) and one for SFT + GRPO (stage ``grpo``).
    """
    fig, ax = plt.subplots(figsize=(6.5, 4))
    plot_sweep(
        ax,
        runs,
        _tag_values(runs, "sft_hours"),
        "bench vs SFT data",
        "SFT data (hours)",
        metric,
        hue=runs.get("stage"),
        hue_labels=STAGE_LABELS,
    )
    fig.tight_layout()
    return fig


def plot_budget_split(runs: pd.DataFrame, metric: str = "score") -> Figure:
    """The paper's Fig. 2b: ``metric`` against the budget share spent on SFT data.

    The tag ``sft_share`` (0..1) gives the share; the rest of the annotation budget buys
    reward (preference) data. One line per stage.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4))
    plot_sweep(
        ax,
        runs,
        _tag_values(runs, "sft_share"),
        "budget split SFT / reward data",
        "share of the budget spent on SFT data",
        metric,
        hue=runs.get("stage"),
        hue_labels=STAGE_LABELS,
    )
    fig.tight_layout()
    return fig


def plot_other_params(
    runs: pd.DataFrame, metric: str = "score", exclude: Iterable[str] = tuple(FIG3_PARAMS)
) -> Figure:
    """``metric`` against every other swept parameter (one panel each, coloured by stage)."""
    skip = {_normal(k) for k in exclude}
    keys = [k for k in swept_params(runs) if _normal(k) not in skip]
    keys = list(dict.fromkeys(_normal(k) for k in keys))
    fig, axes = plt.subplots(
        1, max(len(keys), 1), figsize=(5 * max(len(keys), 1), 3.8), squeeze=False
    )
    if not keys:
        no_data(axes[0, 0], "other swept parameters", "no runs")
    for ax, key in zip(axes[0], keys, strict=False):
        plot_sweep(
            ax,
            runs,
            param_values(runs, key),
            key.rsplit(".", 1)[-1],
            key,
            metric,
            hue=runs.get("stage"),
            hue_labels=STAGE_LABELS,
        )
    fig.tight_layout()
    return fig
