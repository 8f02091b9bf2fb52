"""Errors the ``paras2s`` CLI reports in one line (no traceback), exit status 2."""

from __future__ import annotations


class MissingInputError(FileNotFoundError):
    """A stage's input (an earlier stage's export) is missing; the message names its command."""


class BudgetError(ValueError):
    """A budgeted selection of a query pool came out empty or unreadable (``paras2s curate``)."""


class UsageError(ValueError):
    """A command-line value or option that cannot work; the message names it and the fix."""


class RunFailedError(RuntimeError):
    """A run that finished without producing anything (e.g. no query scored): exit status 1."""


class NoUsableDataError(ValueError):
    """A full pass over a data set (or one reader's share of it) yielded no usable sample."""
