"""``python -m paras2s_pl.sweep``: the same as ``paras2s sweep``."""

from paras2s_pl.sweep.command import sweep_cli

if __name__ == "__main__":  # importing it (a tool listing modules) runs nothing
    sweep_cli()
