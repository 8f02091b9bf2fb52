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

From Python::

    from paras2s_pl.sweep import load_results, parse_grid, run_sweep

    points = parse_grid(["model.group_size=[2,4]"])
    run_sweep("configs/mini/grpo.yaml", points, "runs/sweep/grpo", ["trainer.max_steps=20"])
    runs = load_results("runs/sweep/grpo")["runs"]
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
COMMANDS_FILE = "commands.sh"
SBATCH_FILE = "sweep.sbatch"
DONE_FILE = ".done"
LOG_FILE = "log.txt"
#: Keys the sweep sets itself for every point.
EXPORT_KEY = "model.init_args.export_dir"
LOG_DIR_KEY = "trainer.logger.init_args.save_dir"
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")
LOG_TAIL_LINES = 30
#: Whether the repo's stage modules train a policy (the bench needs one).
KNOWN_STAGES = {
    "paras2s_pl.modules.sft.SFTModule": True,
    "paras2s_pl.modules.grpo.GRPOModule": True,
    "paras2s_pl.modules.reward.RewardModule": False,
}
#: Metrics shown in the console line of a finished point, when it logged them.
SHOWN_METRICS = ("train/reward", "train/kl", "train/loss", "val/loss", "val/pearson")


# ---------------------------------------------------------------------------- specs and grid
def normalize_key(key: str) -> str:
    """LightningCLI's subclass-mode key: ``model.X`` → ``model.init_args.X`` (likewise ``data``).

    ``model.class_path``, keys already under ``init_args`` and every other key
    (``trainer.max_steps``, ``seed_everything``) are returned unchanged.

    Raises:
        ValueError: ``key`` is not a dotted name.
    """
    key = key.strip()
    if not _KEY.match(key):
        raise ValueError(f"{key!r} is not a config key; write it dotted, e.g. model.group_size")
    head, _, rest = key.partition(".")
    if head in ("model", "data") and rest:
        first = rest.split(".")[0]
        if first not in ("init_args", "class_path"):
            return f"{head}.init_args.{rest}"
    return key


def _split_spec(spec: str, option: str) -> tuple[str, str]:
    key, eq, value = str(spec).partition("=")
    if not eq or not key.strip():
        raise ValueError(f"{option} {spec!r}: write KEY=VALUE, e.g. {option} model.group_size=4")
    return key.strip(), value.strip()


def _yaml(value: str, spec: str, option: str) -> Any:
    try:
        return yaml.safe_load(value) if value else None
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"{option} {spec!r}: the value is not YAML ({first})") from None


def parse_grid(specs: Sequence[str]) -> list[dict[str, Any]]:
    """The points of ``KEY=[V1,V2,...]`` specs: their cartesian product, in a stable order.

    Values are read with ``yaml.safe_load``; a scalar is a single value. Keys are
    normalised with :func:`normalize_key`. Points keep the specs' key order and vary the
    last spec fastest; no specs give one empty point.

    Raises:
        ValueError: a spec without ``=``, a bad key, YAML or empty list, or a repeated key.
    """
    axes: dict[str, list[Any]] = {}
    for spec in specs:
        raw_key, text = _split_spec(spec, "--grid")
        try:
            key = normalize_key(raw_key)
        except ValueError as err:
            raise ValueError(f"--grid {spec!r}: {err}") from None
        if key in axes:
            raise ValueError(f"--grid {spec!r}: {key} is already in another --grid; merge them")
        values = _yaml(text, spec, "--grid")
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ValueError(f"--grid {spec!r}: no values; write e.g. {raw_key}=[1,2]")
        axes[key] = values
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def grid_axes(points: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Each key's distinct values over ``points``, in first-seen order."""
    axes: dict[str, list[Any]] = {}
    for point in points:
        for key, value in point.items():
            seen = axes.setdefault(key, [])
            if value not in seen:
                seen.append(value)
    return axes


def parse_overrides(specs: Sequence[str] | None) -> list[tuple[str, str]]:
    """``KEY=VALUE`` overrides as (normalised key, value text); the text is passed on as is.

    Raises:
        ValueError: a spec without ``=``, a bad key or a repeated key.
    """
    out: dict[str, str] = {}
    for spec in specs or ():
        raw_key, text = _split_spec(spec, "--set")
        try:
            key = normalize_key(raw_key)
        except ValueError as err:
            raise ValueError(f"--set {spec!r}: {err}") from None
        if key in out:
            raise ValueError(f"--set {spec!r}: {key} is set twice; keep one")
        out[key] = text
    return list(out.items())


def parse_tags(specs: Sequence[str] | None) -> dict[str, Any]:
    """``NAME=VALUE`` labels (values yaml-parsed).

    Raises:
        ValueError: a spec without ``=`` or a repeated name.
    """
    tags: dict[str, Any] = {}
    for spec in specs or ():
        name, text = _split_spec(spec, "--tag")
        if name in tags:
            raise ValueError(f"--tag {spec!r}: tag {name} is given twice; keep one")
        tags[name] = _yaml(text, spec, "--tag")
    return tags


def format_value(value: Any) -> str:
    """A value as ``paras2s fit`` reads it: strings as is, the rest as JSON (``true``, ``null``)."""
    return value if isinstance(value, str) else json.dumps(value)


# ------------------------------------------------------------------------------ point names
def _short(key: str) -> list[str]:
    """A key's parts without the ``model``/``data``/``trainer`` head and ``init_args``."""
    parts = [p for p in key.split(".") if p != "init_args"]
    return parts[1:] if len(parts) > 1 and parts[0] in ("model", "data", "trainer") else parts


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Short names of grid keys: the last part, or more of the path where two would clash."""
    names: dict[str, str] = {}
    for key in keys:
        parts = _short(key)
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            clash = [k for k in keys if k != key and ".".join(_short(k)[-n:]) == name]
            if not clash:
                break
        names[key] = name
    return names


def point_name(point: Mapping[str, Any], shorts: Mapping[str, str] | None = None) -> str:
    """A filesystem-safe name: ``group_size=2,beta=0.0`` (``base`` for the empty point)."""
    if not point:
        return "base"
    shorts = shorts or short_keys(list(point))
    text = [
        v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for v in point.values()
    ]
    safe = [_UNSAFE.sub("_", v) for v in text]
    return ",".join(f"{shorts[k]}={v}" for k, v in zip(point, safe, strict=True))


def point_names(points: Sequence[Mapping[str, Any]]) -> list[str]:
    """:func:`point_name` of every point, with short names shared by the whole grid.

    Raises:
        ValueError: two points would share a directory.
    """
    shorts = short_keys(list(grid_axes(points)))
    names = [point_name(p, shorts) for p in points]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(
                f"two grid points are both named {name!r} (values differing only in characters "
                "that are not filesystem-safe); change one of the --grid values"
            )
    return names


# ------------------------------------------------------------------------------- commands
def read_stage_config(config: str | Path) -> dict[str, Any]:
    """The stage YAML as a dict.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a LightningCLI config with a ``model`` section.
    """
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file; give a stage YAML such as "
                                "configs/mini/grpo.yaml")  # fmt: skip
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"--config {path}: not YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"--config {path}: no model section; give a `paras2s fit` config")
    return data


def is_policy_config(data: Mapping[str, Any]) -> bool:
    """Whether a stage config trains a speech policy (SFT, GRPO): its export can be benched."""
    class_path = str((data.get("model") or {}).get("class_path", ""))
    if class_path in KNOWN_STAGES:  # no torch import for the repo's own stages
        return KNOWN_STAGES[class_path]
    module_name, _, name = class_path.rpartition(".")
    try:
        import importlib

        from paras2s_pl.modules.policy import PolicyModule

        cls = getattr(importlib.import_module(module_name), name)
        return isinstance(cls, type) and issubclass(cls, PolicyModule)
    except Exception:  # not importable here: judge by the name
        return "reward" not in class_path.lower()


def is_policy_export(directory: str | Path) -> bool:
    """A policy export (``config.json``, no ``reward_config.json``), as bench respond loads."""
    directory = Path(directory)
    return (directory / "config.json").is_file() and not (directory / "reward_config.json").exists()


def _has_logger(data: Mapping[str, Any], overrides: Sequence[tuple[str, str]]) -> bool:
    """Whether ``trainer.logger`` is a class_path mapping (so ``init_args.save_dir`` applies)."""
    if any(k == "trainer.logger" or k.startswith("trainer.logger.") for k, _ in overrides):
        return not any(k == "trainer.logger" for k, _ in overrides)
    logger = (data.get("trainer") or {}).get("logger")
    return isinstance(logger, dict) and "class_path" in logger


def fit_command(
    config: str | Path,
    point: Mapping[str, Any],
    point_dir: str | Path,
    overrides: Sequence[tuple[str, str]] = (),
    python: str = sys.executable,
    logger: bool = True,
) -> list[str]:
    """``python -m paras2s_pl.cli fit`` for one point: overrides, then the grid values."""
    point_dir = Path(point_dir)
    cmd = [python, "-m", "paras2s_pl.cli", "fit", "--config", str(config)]
    for key, text in overrides:
        cmd += [f"--{key}", text]
    for key, value in point.items():
        cmd += [f"--{key}", format_value(value)]
    if logger:
        cmd += [f"--{LOG_DIR_KEY}", str(point_dir / "tb")]
    return cmd + [f"--{EXPORT_KEY}", str(point_dir / "export")]


def bench_commands(
    name: str,
    point_dir: str | Path,
    testset: str | Path,
    split: str = "test",
    python: str = sys.executable,
) -> list[list[str]]:
    """``bench respond`` (the point's exported policy) and ``bench run`` for one point."""
    point_dir = Path(point_dir)
    cli = [python, "-m", "paras2s_pl.cli", "bench"]
    common = ["--testset", str(testset), "--split", split]
    respond = [*cli, "respond", "--system", name, "--policy", str(point_dir / "export"),
               *common, "--out", str(point_dir / "responses"), "--overwrite", "true"]  # fmt: skip
    run = [*cli, "run", *common, "--responses", str(point_dir / "responses"), "--system", name,
           "--out", str(point_dir / "bench")]  # fmt: skip
    return [respond, run]


def shell_line(commands: Sequence[Sequence[str]], point_dir: str | Path) -> str:
    """One point as one shell line: its commands logged to ``log.txt``, then ``.done``."""
    d = Path(point_dir)
    chain = " && ".join(shlex.join(c) for c in commands)
    return (f"mkdir -p {shlex.quote(str(d))} && ( {chain} ) > {shlex.quote(str(d / LOG_FILE))} "
            f"2>&1 && touch {shlex.quote(str(d / DONE_FILE))}")  # fmt: skip


def write_cluster_files(out: Path, lines: Sequence[str], stage: str) -> tuple[Path, Path]:
    """``commands.sh`` (one line per point) and ``sweep.sbatch`` (a SLURM array over it)."""
    out.mkdir(parents=True, exist_ok=True)
    commands = out / COMMANDS_FILE
    commands.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    sbatch = out / SBATCH_FILE
    sbatch.write_text(
        "\n".join([
            "#!/bin/bash",
            f"#SBATCH --job-name=sweep-{stage}",
            f"#SBATCH --array=0-{len(lines) - 1}",
            f"#SBATCH --output={out}/slurm-%A_%a.out",
            "# Written by `paras2s sweep`: task i runs line i+1 of commands.sh (one grid point).",
            "# Add your resource lines (--gres, --cpus-per-task, --time) above. When all tasks",
            "# are done, rerun the same `paras2s sweep` without --dry_run to collect results.json.",
            "set -euo pipefail",
            f"cd {shlex.quote(str(Path.cwd()))}",
            f'line=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(commands))})',
            'bash -c "$line"',
            "",
        ]),
        encoding="utf-8",
    )  # fmt: skip
    return commands, sbatch


# -------------------------------------------------------------------------------- results
def read_bench_row(path: str | Path, system: str) -> dict[str, float | None] | None:
    """A system's Table-3 row (column → score) from a bench ``table.json`` or its directory.

    None when the file or the system is missing.
    """
    path = Path(path)
    path = path / "table.json" if path.is_dir() else path
    if not path.is_file():
        return None
    row = json.loads(path.read_text("utf-8")).get("table3", {}).get(system)
    return dict(row) if isinstance(row, dict) else None


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text("utf-8", errors="replace").splitlines()[-lines:])


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a sweep's ``results.json`` (give the file or the sweep's ``--out`` directory).

    Raises:
        FileNotFoundError: no results there.
    """
    path = Path(path)
    path = path / RESULTS_JSON if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no sweep results; run `paras2s sweep --out DIR` first")
    return json.loads(path.read_text("utf-8"))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def results_rows(results: Mapping[str, Any]) -> tuple[list[str], list[dict[str, str]]]:
    """The flat table of :func:`write_results`: header and one row per run."""
    runs = results.get("runs", [])
    keys: dict[str, list[str]] = {"param": [], "tag": [], "metric": [], "best": [], "bench": []}
    fields = {"param": "params", "tag": "tags", "metric": "metrics", "best": "best",
              "bench": "bench"}  # fmt: skip
    for kind, field in fields.items():
        for run in runs:
            for name in run.get(field) or {}:
                if name not in keys[kind]:
                    keys[kind].append(name)
    header = ["name", "status", "seconds", "global_step"]
    header += [f"{kind}:{name}" for kind, names in keys.items() for name in names]
    rows = []
    for run in runs:
        row = {k: _cell(run.get(k)) for k in header[:4]}
        for kind, field in fields.items():
            values = run.get(field) or {}
            row.update({f"{kind}:{name}": _cell(values.get(name)) for name in keys[kind]})
        rows.append(row)
    return header, rows


def write_results(out: Path, results: Mapping[str, Any]) -> None:
    """``<out>/results.json`` and the flat ``<out>/results.csv`` (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / RESULTS_JSON, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    header, rows = results_rows(results)
    tmp = out / (RESULTS_CSV + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / RESULTS_CSV)


# ----------------------------------------------------------------------------------- runner
def _run_logged(cmd: Sequence[str], log: Path, env: Mapping[str, str]) -> int:
    """Run ``cmd`` with its output appended to ``log``; return its exit status."""
    with log.open("a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(env))
        try:
            return proc.wait()
        except BaseException:  # Ctrl-C: stop the point too
            proc.terminate()
            proc.wait()
            raise


def _collect(record: dict[str, Any], point_dir: Path, name: str) -> None:
    """Fill a run record's metrics and bench row from the files on disk."""
    fit = {}
    metrics_file = point_dir / "export" / "metrics.json"
    if metrics_file.is_file():
        try:
            fit = json.loads(metrics_file.read_text("utf-8"))
        except json.JSONDecodeError:
            fit = {}
    record["global_step"] = fit.get("global_step")
    record["metrics"] = fit.get("metrics", {})
    record["best"] = fit.get("best", {})
    record["bench"] = read_bench_row(point_dir / "bench", name)


def _progress(i: int, n: int, record: Mapping[str, Any]) -> str:
    status = record["status"]
    text = f"[{i}/{n}] {record['name']}: {status}"
    if status == "failed":
        step, log = record.get("failed_step"), record["log"]
        text += f" (exit {record['returncode']} in {step}; see {log})"
    if record.get("seconds") is not None:
        text += f", {record['seconds']:.1f} s"
    if record.get("global_step") is not None:
        text += f", step {record['global_step']}"
    metrics = record.get("metrics") or {}
    shown = [k for k in SHOWN_METRICS if _finite(metrics.get(k))]
    text += "".join(f", {k}={metrics[k]:.4g}" for k in shown)
    bench = record.get("bench") or {}
    if _finite(bench.get("Overall")):
        text += f", bench Overall={bench['Overall']:.3f}"
    return text


def run_sweep(
    config: str | Path,
    points: Sequence[Mapping[str, Any]],
    out: str | Path,
    overrides: Sequence[str] = (),
    tags: Mapping[str, Any] | None = None,
    bench_testset: str | Path | None = None,
    bench_split: str = "test",
    dry_run: bool = False,
    force: bool = False,
    python: str = sys.executable,
) -> dict[str, Any]:
    """Run ``paras2s fit`` (and the bench) for every point, one after another.

    Args:
        config: The stage's YAML (``configs/mini/grpo.yaml``).
        points: Grid points (normalised key → value), e.g. from :func:`parse_grid`.
        out: Sweep directory: ``<out>/<point name>/`` per point, results, commands.
        overrides: ``KEY=VALUE`` overrides applied to every point (``--set``).
        tags: Labels copied into every run record.
        bench_testset: Bench every policy export on this labelled shard set.
        bench_split: Its split.
        dry_run: Only write (and print) ``commands.sh`` and ``sweep.sbatch``.
        force: Run points already done (``.done``) again.
        python: The interpreter of the subprocesses.

    Returns:
        The results (as written to ``<out>/results.json``; with ``dry_run`` the plan, runs
        with status ``planned``).

    Raises:
        FileNotFoundError: no config or no bench test set.
        ValueError: bad overrides, a grid key also set by --set or by the sweep itself.
    """
    out = Path(out)
    data = read_stage_config(config)
    pairs = parse_overrides(overrides)
    points = [dict(p) for p in points] or [{}]
    grid = grid_axes(points)
    for key in grid:
        if key in dict(pairs):
            raise ValueError(f"{key} is both swept (--grid) and fixed (--set); drop one")
    for key in (EXPORT_KEY, LOG_DIR_KEY):
        if key in grid or key in dict(pairs):
            raise ValueError(f"{key} is set per point by the sweep (under --out); drop it")
    if bench_testset is not None and not Path(bench_testset).is_dir():
        raise FileNotFoundError(f"--bench_testset {bench_testset}: no such directory; give "
                                "a labelled shard set such as shards/demo")  # fmt: skip
    names = point_names(points)
    logger = _has_logger(data, pairs)
    bench = bench_testset is not None and is_policy_config(data)
    plans = []
    for name, point in zip(names, points, strict=True):
        point_dir = out / name
        commands = [fit_command(config, point, point_dir, pairs, python, logger)]
        if bench:
            commands += bench_commands(name, point_dir, bench_testset, bench_split, python)
        plans.append((name, point, point_dir, commands))
    write_cluster_files(out, [shell_line(c, d) for _, _, d, c in plans], Path(config).stem)

    tags = dict(tags or {})
    results: dict[str, Any] = {
        "config": str(config),
        "stage": Path(config).stem,
        "grid": grid,
        "overrides": [f"{k}={v}" for k, v in pairs],
        "tags": tags,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "bench_testset": None if bench_testset is None else str(bench_testset),
        "bench_split": bench_split,
        "runs": [],
    }
    if dry_run:
        for name, point, point_dir, commands in plans:
            results["runs"].append({"name": name, "params": point, "tags": tags,
                                    "status": "planned", "run_dir": str(point_dir),
                                    "commands": [shlex.join(c) for c in commands]})  # fmt: skip
        print((out / COMMANDS_FILE).read_text("utf-8"), end="")
        print(f"# {len(plans)} point(s): {out / COMMANDS_FILE}; SLURM: sbatch {out / SBATCH_FILE}")
        return results

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    print(f"sweep {Path(config).stem}: {len(plans)} point(s) -> {out}", flush=True)
    for i, (name, point, point_dir, commands) in enumerate(plans, 1):
        done = point_dir / DONE_FILE
        record: dict[str, Any] = {
            "name": name,
            "params": point,
            "tags": tags,
            "status": "ok",
            "returncode": 0,
            "seconds": None,
            "run_dir": str(point_dir),
            "export_dir": str(point_dir / "export"),
            "log": str(point_dir / LOG_FILE),
        }
        if done.exists() and not force:
            try:
                before = json.loads(done.read_text("utf-8") or "{}")
            except json.JSONDecodeError:  # touched by commands.sh
                before = {}
            record["seconds"] = before.get("seconds")
            record["status"] = "skipped-done"
        else:
            # a failing rerun must not report the last run's numbers
            for path in (done, point_dir / "export/metrics.json", point_dir / "bench/table.json"):
                path.unlink(missing_ok=True)
            point_dir.mkdir(parents=True, exist_ok=True)
            (point_dir / LOG_FILE).write_text("", encoding="utf-8")
            print(f"[{i}/{len(plans)}] {name}: running (log {point_dir / LOG_FILE})", flush=True)
            start = time.perf_counter()
            for n, cmd in enumerate(commands):
                if n == 1 and not is_policy_export(point_dir / "export"):
                    with (point_dir / LOG_FILE).open("a", encoding="utf-8") as f:
                        f.write("# no policy export (config.json): no bench\n")
                    break
                code = _run_logged(cmd, point_dir / LOG_FILE, env)
                if code != 0:
                    record.update(status="failed", returncode=code,
                                  failed_step=" ".join(cmd[3:5]) if n else "fit",
                                  log_tail=_log_tail(point_dir / LOG_FILE))  # fmt: skip
                    break
            record["seconds"] = round(time.perf_counter() - start, 2)
        _collect(record, point_dir, name)
        if record["status"] == "ok":
            done.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", "utf-8")
        results["runs"].append(record)
        write_results(out, results)
        print(_progress(i, len(plans), record), flush=True)
    failed = sum(r["status"] == "failed" for r in results["runs"])
    print(f"sweep done: {len(plans) - failed} ok, {failed} failed; {out / RESULTS_CSV}")
    return results


# --------------------------------------------------------------------------------- command
def sweep_command(
    config: Path,
    grid: list[str],
    out: Path = Path("runs/sweep"),
    set: list[str] | None = None,  # the option --set (shadows the builtin here only)
    tag: list[str] | None = None,
    bench_testset: Path | None = None,
    bench_split: str = "test",
    dry_run: bool = False,
    force: bool = False,
) -> None:
    """Run a stage config once per point of a grid of overrides and collect the results.

    Args:
        config: The stage's ``paras2s fit`` YAML, e.g. ``configs/mini/grpo.yaml``.
        grid: Swept options, ``KEY=[V1,V2,...]`` (YAML values; repeat --grid for more keys;
            the points are their product). ``model.X`` means ``model.init_args.X``.
        out: Sweep directory: a sub-directory per point, ``results.json``/``.csv``,
            ``commands.sh`` and ``sweep.sbatch``.
        set: ``KEY=VALUE`` overrides for every point (repeatable), e.g. trainer.max_steps=20.
        tag: ``NAME=VALUE`` labels of every run in the results (repeatable), e.g. stage=sft.
        bench_testset: Also bench each point's exported policy on this labelled shard set.
        bench_split: Its split.
        dry_run: Write and print ``commands.sh`` and ``sweep.sbatch``; run nothing.
        force: Run points already done again (by default a rerun skips them).
    """
    run_sweep(
        config,
        parse_grid(grid),
        out,
        overrides=set or (),
        tags=parse_tags(tag),
        bench_testset=bench_testset,
        bench_split=bench_split,
        dry_run=dry_run,
        force=force,
    )


#: Options that may be repeated on the command line (``--grid a --grid b``).
REPEATABLE = ("--grid", "--set", "--tag")
BOOLEAN = ("--dry_run", "--force")


def sweep_argv(args: Sequence[str]) -> list[str]:
    """Command-line spelling → jsonargparse's: repeated list options append, flags may be bare.

    ``--grid X --grid Y`` becomes ``--grid+ X --grid+ Y`` (jsonargparse would otherwise want
    one list), ``--grid=X`` likewise, and a bare ``--dry_run`` / ``--force`` gets ``true``.
    """
    out: list[str] = []
    args = list(args)
    for i, arg in enumerate(args):
        opt, eq, value = arg.partition("=")
        if opt in REPEATABLE:
            out += [opt + "+", value] if eq else [opt + "+"]
            continue
        out.append(arg)
        nxt = args[i + 1] if i + 1 < len(args) else "--"
        if arg in BOOLEAN and nxt.startswith("--"):
            out.append("true")
    return out


def sweep_cli(args: Sequence[str] | None = None, prog: str = "paras2s sweep") -> None:
    """``paras2s sweep``: parse ``args`` into :func:`sweep_command` and run it.

    jsonargparse's ``auto_cli`` drops a parameter named ``config`` (it reserves
    ``--config`` for its own config files), so this builds the parser itself; user errors
    are printed in one line (exit status 2).
    """
    from jsonargparse import ArgumentParser

    args = list(sys.argv[1:] if args is None else args)
    doc = (sweep_command.__doc__ or "").strip().splitlines()[0]
    parser = ArgumentParser(prog=prog, description=doc)
    parser.add_function_arguments(sweep_command, as_group=False)
    cfg = parser.instantiate(parser.parse_args(sweep_argv(args)))
    try:
        sweep_command(**cfg.as_dict())
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    sweep_cli()
