"""How ``paras2s`` project commands read their arguments (jsonargparse under the hood).

* **Positional first value**: a command's first required parameter may be given first,
  without its name (``paras2s shards inspect shards/demo`` = ``… inspect --path shards/demo``).
* **Bare flags**: boolean options may be given bare (``--overwrite``).
* **Readable help**: types print as ``Path``, not ``<class 'Path'>``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from jsonargparse import ArgumentParser, DefaultHelpFormatter

# jsonargparse names its own Path class in help and falls back to repr() for pathlib.Path
_CLASS_REPR = re.compile(r"<class '([\w.]+)'>")


class ReadableHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help formatter, with class names instead of ``<class '…'>``."""

    def _get_type_str(self, action: Any) -> str | None:
        text = super()._get_type_str(action)
        return None if text is None else _CLASS_REPR.sub(r"\1", text)


def first_required(fn: Callable[..., object]) -> str | None:
    """Name of ``fn``'s first parameter without a default (the one that may come first)."""
    for name, p in inspect.signature(fn).parameters.items():
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            return name
    return None


class ProjectParser(ArgumentParser):
    """The parser of the project commands: readable help, positional first value noted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", ReadableHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_function_arguments(self, function: Callable[..., object], *args: Any, **kwargs: Any):
        """Add ``function``'s options; the help of the first required one says it may come first."""
        added = super().add_function_arguments(function, *args, **kwargs)
        first = first_required(function)
        for action in self._actions:
            if first is not None and action.dest == first:
                action.help = f"{action.help or ''} May be given first, without --{first}.".strip()
        return added


def bare_flags(fn: Callable[..., object], args: list[str]) -> list[str]:
    """Let boolean options be given bare (``--overwrite``), as users expect of a CLI."""
    flags = {
        f"--{name}"
        for name, p in inspect.signature(fn).parameters.items()
        if p.annotation in (bool, "bool")
    }
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        nxt = args[i + 1] if i + 1 < len(args) else "--"
        if arg in flags and nxt.startswith("--"):
            out.append("true")
    return out


def command_args(fn: Callable[..., object], args: list[str]) -> list[str]:
    """What a user typed after the command name → what jsonargparse parses.

    A first value that is not an option names the first required parameter (``shards
    inspect shards/demo`` → ``--path shards/demo``); bare boolean flags get ``true``.
    """
    first = first_required(fn)
    if first is not None and args and not args[0].startswith("-"):
        args = [f"--{first}", *args]
    return bare_flags(fn, args)
