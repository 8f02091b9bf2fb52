"""``run_sweep``: every point's commands one after another, bookkeeping and console lines."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from paras2s_pl.sweep.grid import grid_axes, parse_overrides, point_names
from paras2s_pl.sweep.plan import (
    COMMANDS_FILE,
    DONE_FILE,
    EXPORT_KEY,
    LOG_DIR_KEY,
    LOG_FILE,
    SBATCH_FILE,
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
from paras2s_pl.sweep.results import RESULTS_CSV, read_bench_row, write_results

LOG_TAIL_LINES = 30
#: Metrics shown in the console line of a finished point, when it logged them.
SHOWN_METRICS = ("train/reward", "train/kl", "train/loss", "val/loss", "val/pearson")
#: Seconds between two reads of a running point's log, and at least between two lines on
#: its progress.
POLL_S = 2.0
PROGRESS_EVERY_S = 30.0
#: The progress line of :class:`paras2s_pl.callbacks.StepProgressBar` (its ``STEP_LINE``,
#: not imported: that module pulls in Lightning, which the sweep itself does not need).
STEP_LINE = re.compile(r"\bstep (\d+)/(\d+)\b")
#: The end of a log read for the last step line.
TAIL_BYTES = 1 << 16


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text("utf-8", errors="replace").splitlines()[-lines:])


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def last_step(log: Path) -> tuple[int, int] | None:
    """The last ``step k/N`` line in (the end of) a point's log: ``(k, N)``, or None."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    found = STEP_LINE.findall(text)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


class PointProgress:
    """Prints a running point's step, read from its log: ``[1/6] P: step 10/20 (50%), 34 s``.

    A line when the step moved, at most every :data:`PROGRESS_EVERY_S`.
    """

    def __init__(self, label: str, log: Path) -> None:
        self.label, self.log = label, log
        self.start = time.perf_counter()
        self.shown: tuple[int, int] | None = None
        self.at = -math.inf

    def __call__(self) -> None:
        """Read the log; print a line if the step moved and the last line is old enough."""
        if time.monotonic() - self.at < PROGRESS_EVERY_S:
            return
        step = last_step(self.log)
        if step is None or step == self.shown:
            return
        self.shown, self.at = step, time.monotonic()
        (k, n), seconds = step, time.perf_counter() - self.start
        print(f"{self.label}: step {k}/{n} ({100 * k // max(n, 1)}%), {seconds:.0f} s", flush=True)


def _run_logged(
    cmd: Sequence[str], log: Path, env: Mapping[str, str], on_wait: Callable[[], None] | None = None
) -> int:
    """Run ``cmd`` with its output appended to ``log``; return its exit status.

    ``on_wait`` is called every :data:`POLL_S` while it runs.
    """
    with log.open("a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(env))
        try:
            while True:
                try:
                    return proc.wait(timeout=POLL_S)
                except subprocess.TimeoutExpired:
                    if on_wait is not None:
                        on_wait()
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


def _run_point(
    name: str,
    point: Mapping[str, Any],
    point_dir: Path,
    commands: Sequence[Sequence[str]],
    tags: Mapping[str, Any],
    env: Mapping[str, str],
    force: bool,
    label: str,
) -> dict[str, Any]:
    """Run one point's commands (or skip it when done) and return its record."""
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
        print(f"{label}: running (log {point_dir / LOG_FILE})", flush=True)
        start = time.perf_counter()
        progress = PointProgress(label, point_dir / LOG_FILE)
        for n, cmd in enumerate(commands):
            if n == 1 and not is_policy_export(point_dir / "export"):
                with (point_dir / LOG_FILE).open("a", encoding="utf-8") as f:
                    f.write("# no policy export (config.json): no bench\n")
                break
            if n:
                print(f"{label}: {' '.join(cmd[3:5])}", flush=True)
            code = _run_logged(cmd, point_dir / LOG_FILE, env, progress if n == 0 else None)
            if code != 0:
                record.update(status="failed", returncode=code,
                              failed_step=" ".join(cmd[3:5]) if n else "fit",
                              log_tail=_log_tail(point_dir / LOG_FILE))  # fmt: skip
                break
        record["seconds"] = round(time.perf_counter() - start, 2)
    _collect(record, point_dir, name)
    if record["status"] == "ok":
        done.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return record


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
    logger = has_logger(data, pairs)
    step_bar = wants_step_bar(data, pairs, list(grid))
    bench = bench_testset is not None and is_policy_config(data)
    plans = []
    for name, point in zip(names, points, strict=True):
        point_dir = out / name
        commands = [fit_command(config, point, point_dir, pairs, python, logger, step_bar)]
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
        label = f"[{i}/{len(plans)}] {name}"
        record = _run_point(name, point, point_dir, commands, tags, env, force, label)
        results["runs"].append(record)
        write_results(out, results)
        print(_progress(i, len(plans), record), flush=True)
    failed = sum(r["status"] == "failed" for r in results["runs"])
    print(f"sweep done: {len(plans) - failed} ok, {failed} failed; {out / RESULTS_CSV}")
    return results
