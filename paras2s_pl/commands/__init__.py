"""The functions behind the project subcommands of ``paras2s``, one module per group.

:mod:`paras2s_pl.cli` maps command names to them and dispatches; their options come from
their typed signatures and docstrings (jsonargparse), so the signatures are the CLI.
"""
