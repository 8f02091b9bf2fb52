"""``python -m paras2s_pl.sweep``: the same as ``paras2s sweep``."""

from paras2s_pl.sweep.command import sweep_cli

sweep_cli()
