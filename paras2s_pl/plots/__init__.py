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

The GRPO side is :mod:`paras2s_pl.plots.rewards`, the sweep side
:mod:`paras2s_pl.plots.ablations` (one per notebook), their shared helpers
:mod:`paras2s_pl.plots.common`; every public name is importable from here.
"""

from paras2s_pl.plots.ablations import (
    FIG3_PARAMS,
    NOT_DONE,
    RUN_COLUMNS,
    STAGE_LABELS,
    SWEEP_COMMAND,
    find_results,
    load_results,
    metric_label,
    param_values,
    plot_budget_split,
    plot_hyperparameters,
    plot_other_params,
    plot_sft_data,
    plot_sweep,
    runs_table,
    swept_params,
)
from paras2s_pl.plots.common import (
    REPO,
    no_data,
    resolve,
    save,
)
from paras2s_pl.plots.rewards import (
    CATEGORY_PREFIX,
    EVENTS_GLOB,
    GRPO_COMMAND,
    GRPO_TAGS,
    START_UP_TAGS,
    TIME_PARTS,
    categories,
    category_rewards,
    find_log_dir,
    has_steps,
    missing_tags,
    plot_category_rewards,
    plot_clip,
    plot_kl,
    plot_lengths,
    plot_optimization,
    plot_reward,
    plot_time,
    read_scalars,
    reward_band,
    summarize,
    tidy_scalars,
    wide,
)

__all__ = [
    "CATEGORY_PREFIX",
    "EVENTS_GLOB",
    "FIG3_PARAMS",
    "GRPO_COMMAND",
    "GRPO_TAGS",
    "NOT_DONE",
    "REPO",
    "RUN_COLUMNS",
    "STAGE_LABELS",
    "START_UP_TAGS",
    "SWEEP_COMMAND",
    "TIME_PARTS",
    "categories",
    "category_rewards",
    "find_log_dir",
    "find_results",
    "has_steps",
    "load_results",
    "metric_label",
    "missing_tags",
    "no_data",
    "param_values",
    "plot_budget_split",
    "plot_category_rewards",
    "plot_clip",
    "plot_hyperparameters",
    "plot_kl",
    "plot_lengths",
    "plot_optimization",
    "plot_other_params",
    "plot_reward",
    "plot_sft_data",
    "plot_sweep",
    "plot_time",
    "read_scalars",
    "resolve",
    "reward_band",
    "runs_table",
    "save",
    "summarize",
    "swept_params",
    "tidy_scalars",
    "wide",
]
