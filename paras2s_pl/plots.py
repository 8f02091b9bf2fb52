"""Readers and figures behind ``notebooks/rewards.ipynb`` and ``notebooks/ablations.ipynb``.

Two inputs:

* **GRPO TensorBoard logs** (``paras2s fit --config configs/mini/grpo.yaml`` writes
  ``runs/grpo/version_N/events.out.tfevents.*``), read with tbparse into a long frame
  (``step``, ``tag``, ``value``; one value per optimizer step and tag)::

      scalars = read_scalars(find_log_dir("runs/grpo"))   # the newest version with events
      fig = plot_reward(scalars); save(fig, "runs/figures", "grpo_reward")

* **Sweep results** (``paras2s sweep`` writes ``<dir>/results.json``: a grid of runs, each
  with ``params``, ``tags``, ``status``, final ``metrics`` and an optional ``bench``
  table), read into one row per run; several sweeps are concatenated::

      runs = load_results("runs/sweep_a,runs/sweep_b")      # failed runs dropped
      fig = plot_hyperparameters(runs)                        # the paper's Fig. 3

Each run's **score** is its bench ``Overall`` and, where the run has no bench table, its
final ``train/reward`` (``score_source`` says which); axis labels say when the fallback is
used and such points are drawn hollow. Plotting uses pyplot figures without ``show``, so it
works under Agg (tests, CI) and inline in Jupyter. A panel without data says so in its title
instead of failing.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

REPO = Path(__file__).resolve().parents[1]
EVENTS_GLOB = "events.out.tfevents.*"
GRPO_COMMAND = "paras2s fit --config configs/mini/grpo.yaml"
SWEEP_COMMAND = "paras2s sweep"

#: Swept keys of the paper's Fig. 3 (LightningCLI names), with their axis labels.
FIG3_PARAMS: dict[str, str] = {
    "data.init_args.batch_size": "batch size B (prompts per rollout)",
    "model.init_args.group_size": "group size G (responses per prompt)",
    "model.init_args.beta": "KL coefficient β",
}
#: How the stage tag reads in legends.
STAGE_LABELS = {"sft": "SFT only", "grpo": "SFT + GRPO", "reward": "reward model"}
CATEGORY_PREFIX = "train/reward/"
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


# ---- paths -----------------------------------------------------------------------------------


def resolve(path: str | Path) -> Path:
    """``path`` as given if it exists, else relative to the repository root.

    Notebooks opened from ``notebooks/`` run there, not at the root the defaults refer to.
    """
    path = Path(path).expanduser()
    if path.exists() or path.is_absolute():
        return path
    in_repo = REPO / path
    return in_repo if in_repo.exists() else path


def _version_key(path: Path) -> tuple[int, float]:
    match = re.fullmatch(r"version_(\d+)", path.name)
    number = int(match.group(1)) if match else -1
    newest_event = max((p.stat().st_mtime for p in path.glob(EVENTS_GLOB)), default=0.0)
    return number, newest_event


def find_log_dir(path: str | Path) -> Path:
    """The TensorBoard run to read under ``path``.

    That is ``path`` itself if it holds event files, else its newest sub-directory that does
    (highest ``version_N``; then the most recent event file).

    Raises:
        FileNotFoundError: no event files there, with the command that writes them.
    """
    path = resolve(path)
    if path.is_dir() and any(path.glob(EVENTS_GLOB)):
        return path
    candidates = [p for p in path.iterdir() if p.is_dir()] if path.is_dir() else []
    candidates = [p for p in candidates if any(p.glob(EVENTS_GLOB))]
    if not candidates:
        raise FileNotFoundError(
            f"no TensorBoard event files in {path} or its version_N folders: run "
            f"`{GRPO_COMMAND}` (logs to runs/grpo/version_N) or point PARAS2S_GRPO_LOGS at a run"
        )
    return max(candidates, key=_version_key)


# ---- GRPO logs -------------------------------------------------------------------------------


def read_scalars(log_dir: str | Path) -> pd.DataFrame:
    """All scalars of one TensorBoard run as a long frame ``step, tag, value``.

    Where a step was logged twice (a run resumed from a checkpoint writes its steps again)
    the later value is kept. Rows are sorted by tag, then step.
    """
    from tbparse import SummaryReader

    with warnings.catch_warnings():  # tbparse 0.0.9 sorts in place: pandas 3 deprecation noise
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        frame = SummaryReader(str(log_dir), extra_columns={"wall_time"}).scalars
    if frame.empty:
        return pd.DataFrame({"step": pd.Series(dtype=int), "tag": [], "value": []})
    return tidy_scalars(frame)


def tidy_scalars(frame: pd.DataFrame) -> pd.DataFrame:
    """Deduplicate ``(tag, step)`` (the last written wins) and sort by tag and step."""
    if "wall_time" in frame:
        frame = frame.sort_values("wall_time", kind="stable")
    frame = frame.drop_duplicates(["tag", "step"], keep="last")
    frame = frame.sort_values(["tag", "step"], kind="stable").reset_index(drop=True)
    return frame[["step", "tag", "value"]].astype({"step": int, "value": float})


def wide(scalars: pd.DataFrame, tags: Iterable[str] | None = None) -> pd.DataFrame:
    """One column per tag, indexed by step (NaN where a tag was not logged at a step)."""
    if tags is not None:
        scalars = scalars[scalars["tag"].isin(list(tags))]
    table = scalars.pivot_table(index="step", columns="tag", values="value", aggfunc="last")
    table.columns.name = None
    return table.sort_index()


def reward_band(scalars: pd.DataFrame) -> pd.DataFrame:
    """Reward mean and std over each rollout's responses, per step.

    Columns ``mean`` (``train/reward``) and ``std`` (``train/reward_std``; 0 where not logged).
    """
    table = wide(scalars, ["train/reward", "train/reward_std"])
    if "train/reward" not in table:
        return pd.DataFrame({"mean": pd.Series(dtype=float), "std": pd.Series(dtype=float)})
    std = table["train/reward_std"] if "train/reward_std" in table else 0.0
    band = pd.DataFrame({"mean": table["train/reward"], "std": std}, index=table.index)
    band = band.dropna(subset=["mean"])
    band["std"] = band["std"].fillna(0.0)
    return band


def categories(scalars: pd.DataFrame) -> list[str]:
    """The categories with a ``train/reward/<category>`` tag (labelled prompts only)."""
    tags = scalars["tag"].unique()
    return sorted(t[len(CATEGORY_PREFIX) :] for t in tags if t.startswith(CATEGORY_PREFIX))


def category_rewards(scalars: pd.DataFrame) -> pd.DataFrame:
    """Reward per category (columns) and step (index); NaN where a rollout had none."""
    table = wide(scalars, [CATEGORY_PREFIX + c for c in categories(scalars)])
    return table.rename(columns=lambda t: t[len(CATEGORY_PREFIX) :])


#: Tags every GRPO run logs (per optimizer step); the figures read these and a few more.
GRPO_TAGS = ("train/reward", "train/reward_std", "train/kl", "train/clip_ratio/region_mean",
             "train/completions/mean_length", "train/loss", "train/step_time")  # fmt: skip


def missing_tags(scalars: pd.DataFrame, expected: Iterable[str] = GRPO_TAGS) -> list[str]:
    """The ``expected`` GRPO tags that ``scalars`` lacks (all of them: not a GRPO run)."""
    present = set(scalars["tag"])
    return [t for t in expected if t not in present]


def summarize(scalars: pd.DataFrame) -> pd.DataFrame:
    """Per tag: number of steps, first / last step, first, last, min and max value."""
    groups = scalars.sort_values("step").groupby("tag")
    return pd.DataFrame(
        {
            "steps": groups["step"].count(),
            "first_step": groups["step"].min(),
            "last_step": groups["step"].max(),
            "first": groups["value"].first(),
            "last": groups["value"].last(),
            "min": groups["value"].min(),
            "max": groups["value"].max(),
        }
    )


def _smooth(series: pd.Series, smooth: float) -> pd.Series:
    """TensorBoard-style exponential moving average (``smooth`` in [0, 1); 0: raw)."""
    if not smooth:
        return series
    return series.dropna().ewm(alpha=1.0 - smooth).mean()


def _no_data(ax: Axes, title: str, what: str = "not logged") -> None:
    ax.set_title(f"{title} ({what})")
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="grey")


def _steps_axis(ax: Axes) -> None:
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _lines(
    ax: Axes,
    table: pd.DataFrame,
    tags: Sequence[str],
    title: str,
    ylabel: str,
    smooth: float = 0.0,
    labels: Sequence[str] | None = None,
) -> bool:
    """Draw the ``tags`` present in ``table`` against step; False (and a note) if none."""
    labels = labels or [t.removeprefix("train/") for t in tags]
    drawn = False
    for tag, label in zip(tags, labels, strict=True):
        if tag not in table or table[tag].isna().all():
            continue
        series = table[tag].dropna()
        line = ax.plot(series.index, _smooth(series, smooth), label=label, marker=".")[0]
        if smooth:
            ax.plot(series.index, series, color=line.get_color(), alpha=0.25)
        drawn = True
    _steps_axis(ax)
    ax.set_ylabel(ylabel)
    if not drawn:
        _no_data(ax, title)
        return False
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return True


def plot_reward(scalars: pd.DataFrame, smooth: float = 0.0) -> Figure:
    """Reward mean ± std per step; share of groups with zero reward spread (no signal)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    band = reward_band(scalars)
    if band.empty:
        _no_data(left, "reward")
    else:
        mean = _smooth(band["mean"], smooth)
        left.fill_between(
            band.index,
            band["mean"] - band["std"],
            band["mean"] + band["std"],
            alpha=0.2,
            label="± std over responses",
        )
        left.plot(band.index, mean, marker=".", label="mean")
        left.set_title("reward per rollout")
        left.legend(fontsize="small")
        left.grid(alpha=0.3)
    _steps_axis(left)
    left.set_ylabel("reward")
    table = wide(scalars)
    _lines(
        right,
        table,
        ["train/frac_reward_zero_std", "train/advantage_std"],
        "learning signal",
        "value",
        smooth,
    )
    fig.tight_layout()
    return fig


def plot_category_rewards(scalars: pd.DataFrame, smooth: float = 0.0) -> Figure:
    """Reward per category against step, and its mean over the run per category."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=(2, 1))
    table = category_rewards(scalars)
    if table.empty:
        for ax in (left, right):
            _no_data(ax, "reward per category", "not logged: unlabelled prompts")
        fig.tight_layout()
        return fig
    _lines(left, table, list(table.columns), "reward per category", "reward", smooth)
    stats = table.agg(["mean", "std", "count"]).T
    right.bar(
        [f"{name}\n(n={int(n)})" for name, n in zip(stats.index, stats["count"], strict=True)],
        stats["mean"],
        yerr=stats["std"].fillna(0),
        capsize=3,
        color=[f"C{i}" for i in range(len(stats))],
    )
    right.set_title("mean over the run (± std over steps)")
    right.set_ylabel("reward")
    fig.tight_layout()
    return fig


def plot_kl(scalars: pd.DataFrame, smooth: float = 0.0) -> Figure:
    """k3 KL to the reference policy, overall and per stream."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    _lines(
        ax,
        wide(scalars),
        ["train/kl", "train/kl/text", "train/kl/audio"],
        "KL to the reference",
        "KL (k3, per token)",
        smooth,
    )
    fig.tight_layout()
    return fig


def plot_clip(scalars: pd.DataFrame, smooth: float = 0.0) -> Figure:
    """Share of tokens whose ratio was clipped (low / high side, either)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    tags = [
        "train/clip_ratio/low_mean",
        "train/clip_ratio/high_mean",
        "train/clip_ratio/region_mean",
    ]
    _lines(
        ax,
        wide(scalars),
        tags,
        "clip fraction",
        "share of tokens",
        smooth,
        labels=["low (r < 1-ε, Â < 0)", "high (r > 1+ε, Â > 0)", "either"],
    )
    fig.tight_layout()
    return fig


def plot_lengths(scalars: pd.DataFrame, smooth: float = 0.0) -> Figure:
    """Response lengths (positions, text and audio tokens, seconds) and truncated share."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    table = wide(scalars)
    _lines(
        axes[0],
        table,
        [
            "train/completions/mean_length",
            "train/completions/mean_text_tokens",
            "train/completions/mean_audio_tokens",
        ],
        "response length",
        "tokens",
        smooth,
        labels=["positions", "text tokens", "audio tokens"],
    )
    _lines(
        axes[1],
        table,
        ["train/completions/mean_seconds"],
        "decoded audio",
        "seconds",
        smooth,
        labels=["mean seconds"],
    )
    _lines(
        axes[2],
        table,
        ["train/completions/clipped_ratio"],
        "truncated responses",
        "share hitting max_new_tokens",
        smooth,
        labels=["truncated"],
    )
    fig.tight_layout()
    return fig


def plot_optimization(scalars: pd.DataFrame, smooth: float = 0.0) -> Figure:
    """Loss and policy loss, gradient norm, entropies and learning rate."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    table = wide(scalars)
    _lines(axes[0, 0], table, ["train/loss", "train/policy_loss"], "loss", "loss", smooth)
    _lines(
        axes[0, 1], table, ["train/grad_norm"], "gradient norm (before clipping)", "norm", smooth
    )
    _lines(
        axes[1, 0],
        table,
        ["train/entropy", "train/entropy/text", "train/entropy/audio"],
        "entropy",
        "nats per token",
        smooth,
    )
    _lines(axes[1, 1], table, ["train/lr"], "learning rate", "lr")
    fig.tight_layout()
    return fig


TIME_PARTS = ("rollout", "decode", "score", "logprobs", "update")


def plot_time(scalars: pd.DataFrame) -> Figure:
    """Seconds per optimizer step, stacked by part (rollout, decode, score, logprobs, update)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    table = wide(scalars, [f"train/time/{p}" for p in TIME_PARTS] + ["train/step_time"])
    parts = [p for p in TIME_PARTS if f"train/time/{p}" in table]
    if not parts:
        _no_data(ax, "time per step")
        return fig
    stack = table[[f"train/time/{p}" for p in parts]].fillna(0.0)
    ax.stackplot(stack.index, stack.T.to_numpy(), labels=parts, alpha=0.8)
    if "train/step_time" in table:
        ax.plot(table.index, table["train/step_time"], color="k", lw=1, label="step_time")
    ax.set_title("time per optimizer step")
    _steps_axis(ax)
    ax.set_ylabel("seconds")
    ax.legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    return fig


def save(fig: Figure, fig_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Write ``fig`` to ``fig_dir/name.png`` (folders made); returns the path."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    path = fig_dir / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


# ---- sweep results ---------------------------------------------------------------------------


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
        _no_data(axes[0, 0], "other swept parameters", "no runs")
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
