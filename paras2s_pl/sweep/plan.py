"""The commands of a point (``paras2s fit``, ``bench respond`` / ``run``) and the cluster files."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from paras2s_pl.sweep.grid import format_value

COMMANDS_FILE = "commands.sh"
SBATCH_FILE = "sweep.sbatch"
DONE_FILE = ".done"
LOG_FILE = "log.txt"
#: Keys the sweep sets itself for every point.
EXPORT_KEY = "model.init_args.export_dir"
LOG_DIR_KEY = "trainer.logger.init_args.save_dir"
#: Appended to a point's fit: progress as ``step k/N`` lines in its log, read by the runner.
STEP_BAR = ("--trainer.callbacks+", "paras2s_pl.callbacks.StepProgressBar")
#: Whether the repo's stage modules train a policy (the bench needs one).
KNOWN_STAGES = {
    "paras2s_pl.modules.sft.SFTModule": True,
    "paras2s_pl.modules.grpo.GRPOModule": True,
    "paras2s_pl.modules.reward.RewardModule": False,
}


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


def has_logger(data: Mapping[str, Any], overrides: Sequence[tuple[str, str]]) -> bool:
    """Whether ``trainer.logger`` is a class_path mapping (so ``init_args.save_dir`` applies)."""
    if any(k == "trainer.logger" or k.startswith("trainer.logger.") for k, _ in overrides):
        return not any(k == "trainer.logger" for k, _ in overrides)
    logger = (data.get("trainer") or {}).get("logger")
    return isinstance(logger, dict) and "class_path" in logger


def wants_step_bar(
    data: Mapping[str, Any], overrides: Sequence[tuple[str, str]], grid_keys: Sequence[str] = ()
) -> bool:
    """Whether to add :data:`STEP_BAR` to the points' fits.

    Not where progress bars are switched off (Lightning refuses a bar then) or a progress bar
    is already named (a second one is refused too).
    """
    trainer, given = data.get("trainer") or {}, dict(overrides)
    if {"trainer.enable_progress_bar", "trainer.callbacks"} & set(grid_keys):
        return False  # differs per point: leave each as given
    enabled = given.get("trainer.enable_progress_bar", trainer.get("enable_progress_bar", True))
    if str(enabled).strip().lower() in ("false", "0", "no", "off"):
        return False
    callbacks = [
        t for k, t in overrides if k == "trainer.callbacks" or k.startswith("trainer.callbacks.")
    ]
    named = callbacks or [json.dumps(trainer.get("callbacks"))]
    return not any("ProgressBar" in text for text in named)


def fit_command(
    config: str | Path,
    point: Mapping[str, Any],
    point_dir: str | Path,
    overrides: Sequence[tuple[str, str]] = (),
    python: str = sys.executable,
    logger: bool = True,
    step_bar: bool = False,
) -> list[str]:
    """``python -m paras2s_pl.cli fit`` for one point.

    Overrides, the grid values, then the sweep's own options: log dir, :data:`STEP_BAR` (with
    ``step_bar``), export dir.
    """
    point_dir = Path(point_dir)
    cmd = [python, "-m", "paras2s_pl.cli", "fit", "--config", str(config)]
    for key, text in overrides:
        cmd += [f"--{key}", text]
    for key, value in point.items():
        cmd += [f"--{key}", format_value(value)]
    if logger:
        cmd += [f"--{LOG_DIR_KEY}", str(point_dir / "tb")]
    if step_bar:
        cmd += list(STEP_BAR)
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
