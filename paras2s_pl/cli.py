"""The ``paras2s`` command: its help and dispatch (the commands live in :mod:`paras2s_pl.commands`).

Lightning subcommands (``fit``, ``validate``, ``test``; ``predict`` answers in one line that
no stage predicts) come from LightningCLI in subclass mode
(:mod:`paras2s_pl.commands.lightning`)::

    paras2s fit --config configs/mini/sft.yaml

Project subcommands sit beside them in :data:`COMMANDS` (group → name → function); their
options come from the functions' signatures and docstrings, and the first required one may
be given first, without its name (:mod:`paras2s_pl.commands.parsing`)::

    paras2s shards build-demo --out shards/demo
    paras2s shards inspect shards/demo --split train --limit 3

``paras2s --help`` lists everything; every subcommand has ``--help``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from paras2s_pl import __version__
from paras2s_pl.bench.backends import BenchError
from paras2s_pl.commands import bench, curate, shards
from paras2s_pl.commands.demo import demo
from paras2s_pl.commands.parsing import ProjectParser, command_args
from paras2s_pl.data.schema import SchemaError
from paras2s_pl.data.seed import SeedError
from paras2s_pl.errors import BudgetError, NoUsableDataError, RunFailedError, UsageError

#: Errors caused by the user's input; their messages name the file, the field and the fix.
USER_ERRORS: tuple[type[Exception], ...] = (
    BenchError,
    BudgetError,
    FileExistsError,
    FileNotFoundError,
    NoUsableDataError,
    SeedError,
    SchemaError,
    UsageError,
)

#: Lightning commands listed in ``paras2s --help``.
LIGHTNING_COMMANDS = {
    "fit": "train a stage (SFT, reward model, GRPO) from a --config YAML",
    "validate": "the validation loop of a --config YAML (SFT, reward model)",
    "test": "held-out metrics of a trained SFT policy or reward model (--ckpt_path)",
}
#: Every Lightning command dispatched; ``predict`` is not listed: no stage predicts through
#: Lightning, and it says so in one line (responses come from ``paras2s bench respond``).
LIGHTNING_SUBCOMMANDS = (*LIGHTNING_COMMANDS, "predict")
#: Where the --config YAMLs are (under the Lightning commands in ``paras2s --help``).
CONFIGS_LINES = (
    "configs: configs/mini/<stage>.yaml (mini world, CPU), configs/<stage>.yaml (paper",
    "         scale); stage = sft | reward | grpo; configs/README.md lists their exports",
)

#: Project subcommands: group → name → function.
COMMANDS: dict[str, dict[str, Callable[..., object]]] = {
    "shards": {"build-demo": shards.build_demo, "inspect": shards.inspect},
    "bench": {
        "respond": bench.respond,
        "run": bench.run,
        "table": bench.table,
        "correlate": bench.correlate,
        "export-human": bench.export_human,
    },
    "curate": {"preferences": curate.preferences, "subset": curate.subset},
}
#: Project commands without a group.
SINGLE_COMMANDS: dict[str, Callable[..., object]] = {"demo": demo}


def _help() -> str:
    lines = [
        f"paras2s {__version__}: ParaS2S benchmark and alignment (Lightning + HF)",
        "",
        "usage: paras2s <command> [options]   (each command has --help)",
        "",
        "Lightning commands (configs pick the module and data by class_path):",
    ]
    lines += [f"  {name:<22}{text}" for name, text in LIGHTNING_COMMANDS.items()]
    lines += [f"  {line}" for line in CONFIGS_LINES] + ["", "Project commands:"]
    for group, commands in COMMANDS.items():
        for name, fn in commands.items():
            first = (fn.__doc__ or "").strip().splitlines()[0]
            lines.append(f"  {group + ' ' + name:<22}{first}")
    from paras2s_pl.sweep import sweep_command

    for name, fn in {**SINGLE_COMMANDS, "sweep": sweep_command}.items():
        first = (fn.__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<22}{first}")
    return "\n".join(lines)


def lightning_cli(args: list[str] | None = None, run: bool = True):
    """Build the LightningCLI on ``args`` (:func:`paras2s_pl.commands.lightning.lightning_cli`)."""
    from paras2s_pl.commands.lightning import lightning_cli as build

    return build(args, run)


class _StderrHandler(logging.StreamHandler):
    """A console handler writing to ``sys.stderr`` as it is now, not as it was when made.

    A caller that redirects or captures stderr later (a test, a notebook) still gets the logs.
    """

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; always stderr
        pass


def _log_to_console() -> None:
    """Show the package's INFO logs on stderr (once, however often ``main`` runs).

    The handler sits on the ``paras2s_pl`` logger, not the root: Lightning brings its own
    console handler, and a root handler as well printed each of its lines twice.
    """
    pkg = logging.getLogger("paras2s_pl")
    if not pkg.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        pkg.addHandler(handler)
    pkg.setLevel(logging.INFO)


def _trainer_hint(err: Exception) -> str:
    """Lightning's complaint about a trainer option, with what to run on this machine."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "gpu" in text.lower() or "cuda" in text.lower():
        return (
            f"{text} The config asks for GPUs (configs/<stage>.yaml: FSDP on 8 GPUs) and this "
            "machine has none: run configs/mini/<stage>.yaml here, or add --trainer.accelerator "
            "cpu --trainer.devices 1 --trainer.strategy auto --trainer.precision 32-true"
        )
    return f"{text} (a --trainer option; `paras2s fit --help` lists them)"


def main(argv: list[str] | None = None) -> object:
    """Entry point of the ``paras2s`` console script."""
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    _log_to_console()
    if not argv or argv[0] in ("-h", "--help"):
        print(_help())
        return None
    if argv[0] == "--version":
        print(__version__)
        return None
    if argv[0] in COMMANDS:
        from jsonargparse import auto_cli

        group = COMMANDS[argv[0]]
        args = argv[1:]
        if args and args[0] in group:
            args = [args[0], *command_args(group[args[0]], args[1:])]
        try:
            return auto_cli(
                group,
                args=args,
                prog=f"paras2s {argv[0]}",
                as_positional=False,  # command_args maps a positional first value
                parser_class=ProjectParser,
            )
        except USER_ERRORS as err:  # a clear one-line error, not a traceback
            print(f"paras2s {' '.join(argv[:2])}: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except RunFailedError as err:  # the run went through and produced nothing
            print(f"paras2s {' '.join(argv[:2])}: {err}", file=sys.stderr)
            raise SystemExit(1) from None
    if argv[0] == "sweep":  # its own parser: auto_cli would swallow its --config option
        from paras2s_pl.sweep import sweep_cli

        return sweep_cli(argv[1:])
    if argv[0] in SINGLE_COMMANDS:
        from jsonargparse import auto_cli

        from paras2s_pl.pipeline import StageError

        fn = SINGLE_COMMANDS[argv[0]]
        try:
            return auto_cli(
                fn,
                args=command_args(fn, argv[1:]),
                prog=f"paras2s {argv[0]}",
                as_positional=False,
                parser_class=ProjectParser,
            )
        except USER_ERRORS as err:
            print(f"paras2s {argv[0]}: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except StageError as err:
            print(f"paras2s {argv[0]}: {err}", file=sys.stderr)
            raise SystemExit(1) from None
    if argv[0] in LIGHTNING_SUBCOMMANDS:
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        from paras2s_pl.commands.lightning import UnsupportedCommandError

        try:
            return lightning_cli(None if from_sys else argv)
        # an earlier stage's output, a loop the stage has not, data with no usable sample,
        # an invalid value: name it, no traceback
        except (UnsupportedCommandError, *USER_ERRORS) as err:  # MissingInputError among them
            print(f"paras2s {argv[0]}: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except MisconfigurationException as err:  # Lightning's check of a trainer option
            print(f"paras2s {argv[0]}: error: {_trainer_hint(err)}", file=sys.stderr)
            raise SystemExit(2) from None
    print(f"paras2s: unknown command {argv[0]!r}\n\n{_help()}", file=sys.stderr)
    raise SystemExit(2)


def entry() -> None:
    """Console-script entry: run :func:`main` and exit 0 on success.

    ``main`` returns the LightningCLI object (tests read its trainer); a console script
    that returned it would hand it to ``sys.exit`` and end with status 1.
    """
    main()


if __name__ == "__main__":
    entry()
