"""GRPO TensorBoard logs: find a run, read its scalars, draw ``notebooks/rewards.ipynb``'s figures.

``paras2s fit --config configs/mini/grpo.yaml`` writes
``runs/grpo/version_N/events.out.tfevents.*``; :func:`read_scalars` reads them with tbparse
into a long frame (``step``, ``tag``, ``value``; one value per optimizer step and tag)::

    scalars = read_scalars(find_log_dir("runs/grpo"))   # the newest version with events
    fig = plot_reward(scalars); save(fig, "runs/figures", "grpo_reward")
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from paras2s_pl.plots.common import no_data, resolve

log = logging.getLogger(__name__)

EVENTS_GLOB = "events.out.tfevents.*"
#: Scalars a run writes before its first step (Lightning's hyperparameter placeholder).
START_UP_TAGS = ("hp_metric",)
GRPO_COMMAND = "paras2s fit --config configs/mini/grpo.yaml"
CATEGORY_PREFIX = "train/reward/"


def _version_key(path: Path) -> tuple[int, float]:
    match = re.fullmatch(r"version_(\d+)", path.name)
    number = int(match.group(1)) if match else -1
    newest_event = max((p.stat().st_mtime for p in path.glob(EVENTS_GLOB)), default=0.0)
    return number, newest_event


def has_steps(run: Path) -> bool:
    """Whether ``run``'s event files hold a scalar of a training step.

    A run that stopped at start-up leaves event files with none, or only the
    :data:`START_UP_TAGS`. Reading stops at the first such scalar.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for file in sorted(run.glob(EVENTS_GLOB)):
        for event in EventFileLoader(str(file)).Load():
            for value in event.summary.value:
                scalar = (value.WhichOneof("value") == "simple_value"
                          or value.metadata.plugin_data.plugin_name == "scalars")  # fmt: skip
                if scalar and value.tag not in START_UP_TAGS:
                    return True
    return False


def find_log_dir(path: str | Path) -> Path:
    """The TensorBoard run to read under ``path``.

    That is ``path`` itself if it holds event files, else its newest sub-directory whose
    events hold a logged step (highest ``version_N``; then the most recent event file). Newer
    runs without a step (stopped at start-up) are skipped, with a one-line warning.

    Raises:
        FileNotFoundError: no event files there, or none with a logged step, with the
            command that writes them.
    """
    path = resolve(path)
    if path.is_dir() and any(path.glob(EVENTS_GLOB)):
        if not has_steps(path):
            raise FileNotFoundError(
                f"{path}: its event files hold no logged step (a run that stopped at start-up); "
                f"point PARAS2S_GRPO_LOGS at a run that trained, or at its parent folder"
            )
        return path
    candidates = [p for p in path.iterdir() if p.is_dir()] if path.is_dir() else []
    candidates = [p for p in candidates if any(p.glob(EVENTS_GLOB))]
    if not candidates:
        raise FileNotFoundError(
            f"no TensorBoard event files in {path} or its version_N folders: run "
            f"`{GRPO_COMMAND}` (logs to runs/grpo/version_N) or point PARAS2S_GRPO_LOGS at a run"
        )
    skipped = []
    for run in sorted(candidates, key=_version_key, reverse=True):
        if has_steps(run):
            if skipped:
                log.warning("skipped %s: no logged step (stopped at start-up); reading %s",
                            ", ".join(p.name for p in skipped), run.name)  # fmt: skip
            return run
        skipped.append(run)
    raise FileNotFoundError(
        f"no logged step in {path}: {', '.join(p.name for p in skipped)} stopped at start-up; "
        f"run `{GRPO_COMMAND}` or point PARAS2S_GRPO_LOGS at a run that trained"
    )


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
    if frame.empty:  # typed like a full frame, so that ``scalars["tag"].str`` works
        return pd.DataFrame({"step": pd.Series(dtype=int), "tag": pd.Series(dtype=str),
                             "value": pd.Series(dtype=float)})  # fmt: skip
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
        no_data(ax, title)
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
        no_data(left, "reward")
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
            no_data(ax, "reward per category", "not logged: unlabelled prompts")
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
        no_data(ax, "time per step")
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
