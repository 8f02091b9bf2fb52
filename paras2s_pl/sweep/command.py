"""``paras2s sweep`` on the command line: :func:`sweep_command` and its parser."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from paras2s_pl.sweep.grid import parse_grid, parse_tags
from paras2s_pl.sweep.runner import run_sweep


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
