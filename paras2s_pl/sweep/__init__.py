r"""Ablation sweeps: one ``paras2s fit`` per point of a grid, results gathered in one table.

``paras2s sweep`` runs a stage's config (``configs/mini/grpo.yaml``…) once per point of
the cartesian product of ``--grid`` options, **sequentially**, each as a subprocess::

    paras2s sweep --config configs/mini/grpo.yaml \
        --grid "model.group_size=[2,4,8]" --grid "model.beta=[0.0,0.2]" \
        --set trainer.max_steps=20 --tag stage=grpo \
        --bench_testset shards/demo --out runs/sweep/grpo

Six points, named ``group_size=2,beta=0.0`` … ``group_size=8,beta=0.2``; point ``P`` runs::

    python -m paras2s_pl.cli fit --config configs/mini/grpo.yaml \
        --trainer.max_steps 20 --model.init_args.group_size 2 --model.init_args.beta 0.0 \
        --trainer.logger.init_args.save_dir runs/sweep/grpo/P/tb \
        --model.init_args.export_dir runs/sweep/grpo/P/export

**Options.** ``--grid KEY=[V1,V2,...]``: the values are read with ``yaml.safe_load``
(numbers, ``true``/``false``, ``null``, strings; a scalar is one value; nest lists to sweep
list values: ``trainer.callbacks=[[],null]``). ``--set KEY=VALUE``: the same override for every
point (the value text is passed to ``paras2s fit`` unchanged). Keys are LightningCLI keys; in
subclass mode (``paras2s fit``) init arguments live under ``init_args``, and the short form
is accepted: ``model.X`` / ``data.X`` become ``model.init_args.X`` / ``data.init_args.X``
(unless ``X`` is ``class_path`` or starts with ``init_args``); ``trainer.*`` and other keys
stay as written. ``--tag NAME=VALUE`` (value yaml-parsed) labels every point in the
results (``stage=sft``, ``sft_hours=0.3``), nothing else. On the command line ``--grid``,
``--set`` and ``--tag`` may be repeated.

**Per point** ``<out>/<P>/``: ``log.txt`` (the subprocesses' output, streamed), ``tb/``
(TensorBoard logs and checkpoints), ``export/`` (the stage's export and its
``metrics.json``: :func:`paras2s_pl.modules.export.read_fit_metrics`), and with
``--bench_testset`` and a policy export (``export/config.json``): ``responses/``
(``paras2s bench respond --system P --policy export``) and ``bench/`` (``paras2s bench
run``; its ``table.json`` gives the point's Table-3 row). A point that ends well (fit and
bench) gets ``<out>/<P>/.done``; a rerun skips it (``--force`` runs it again) but still
lists it in the results, re-read from disk. A failing point is recorded as ``failed``
(return code, tail of its log) and the sweep goes on.

**Results**, rewritten after every point: ``<out>/results.json`` (:func:`load_results`)::

    {"config": "configs/mini/grpo.yaml", "stage": "grpo",
     "grid": {"model.init_args.group_size": [2, 4]}, "overrides": ["trainer.max_steps=20"],
     "tags": {"stage": "grpo"}, "created": "2025-01-01T12:00:00+00:00",
     "runs": [{"name": "group_size=2", "params": {"model.init_args.group_size": 2},
               "tags": {"stage": "grpo"}, "status": "ok", "returncode": 0, "seconds": 12.3,
               "run_dir": "...", "export_dir": "...", "global_step": 20,
               "metrics": {"train/reward": 3.1}, "best": {},
               "bench": {"Age": 2.4, "Overall": 2.5} or None, ...}]}

(status ``ok``, ``failed`` or ``skipped-done``) and ``<out>/results.csv``, one row per
point: ``name, status, seconds, global_step``, then ``param:<key>``, ``tag:<name>``,
``metric:<name>``, ``best:<name>``, ``bench:<column>`` (union over the points; empty
where a point has none).

**Clusters.** Every sweep writes ``<out>/commands.sh`` (one line per point: fit, bench,
log and ``.done`` marker) and ``<out>/sweep.sbatch`` (a SLURM array job running line
``$SLURM_ARRAY_TASK_ID + 1``; add your ``#SBATCH`` resource lines). ``--dry_run`` writes
and prints them and runs nothing: ``sbatch runs/sweep/grpo/sweep.sbatch``, then the same
``paras2s sweep`` without ``--dry_run`` collects the results (every point is done).

The code: :mod:`~paras2s_pl.sweep.grid` (specs → points and their names),
:mod:`~paras2s_pl.sweep.plan` (a point's commands, ``commands.sh`` / ``sweep.sbatch``),
:mod:`~paras2s_pl.sweep.runner` (:func:`run_sweep`), :mod:`~paras2s_pl.sweep.results`
(``results.json`` / ``.csv``) and :mod:`~paras2s_pl.sweep.command` (``paras2s sweep``); every
public name is importable from ``paras2s_pl.sweep``. From Python::

    from paras2s_pl.sweep import load_results, parse_grid, run_sweep

    points = parse_grid(["model.group_size=[2,4]"])
    run_sweep("configs/mini/grpo.yaml", points, "runs/sweep/grpo", ["trainer.max_steps=20"])
    runs = load_results("runs/sweep/grpo")["runs"]
"""

from paras2s_pl.sweep.command import (
    BOOLEAN,
    REPEATABLE,
    sweep_argv,
    sweep_cli,
    sweep_command,
)
from paras2s_pl.sweep.grid import (
    format_value,
    grid_axes,
    normalize_key,
    parse_grid,
    parse_overrides,
    parse_tags,
    point_name,
    point_names,
    short_keys,
)
from paras2s_pl.sweep.plan import (
    COMMANDS_FILE,
    DONE_FILE,
    EXPORT_KEY,
    KNOWN_STAGES,
    LOG_DIR_KEY,
    LOG_FILE,
    SBATCH_FILE,
    STEP_BAR,
    bench_commands,
    fit_command,
    has_logger,
    is_policy_config,
    is_policy_export,
    read_stage_config,
    shell_line,
    wants_step_bar,
    write_cluster_files,
)
from paras2s_pl.sweep.results import (
    RESULTS_CSV,
    RESULTS_JSON,
    load_results,
    read_bench_row,
    results_rows,
    write_results,
)
from paras2s_pl.sweep.runner import (
    LOG_TAIL_LINES,
    POLL_S,
    PROGRESS_EVERY_S,
    SHOWN_METRICS,
    STEP_LINE,
    TAIL_BYTES,
    PointProgress,
    last_step,
    run_sweep,
)

__all__ = [
    "BOOLEAN",
    "COMMANDS_FILE",
    "DONE_FILE",
    "EXPORT_KEY",
    "KNOWN_STAGES",
    "LOG_DIR_KEY",
    "LOG_FILE",
    "LOG_TAIL_LINES",
    "REPEATABLE",
    "RESULTS_CSV",
    "RESULTS_JSON",
    "POLL_S",
    "PROGRESS_EVERY_S",
    "PointProgress",
    "SBATCH_FILE",
    "STEP_BAR",
    "STEP_LINE",
    "TAIL_BYTES",
    "SHOWN_METRICS",
    "bench_commands",
    "fit_command",
    "format_value",
    "grid_axes",
    "has_logger",
    "is_policy_config",
    "is_policy_export",
    "last_step",
    "load_results",
    "normalize_key",
    "parse_grid",
    "parse_overrides",
    "parse_tags",
    "point_name",
    "point_names",
    "read_bench_row",
    "read_stage_config",
    "results_rows",
    "run_sweep",
    "shell_line",
    "short_keys",
    "sweep_argv",
    "sweep_cli",
    "sweep_command",
    "wants_step_bar",
    "write_cluster_files",
    "write_results",
]
