"""The ``paras2s`` entry point: help lists every command; each command has --help."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from paras2s_pl.cli import COMMANDS, LIGHTNING_COMMANDS, _bare_flags, main, shards_build_demo


def test_top_level_help_lists_lightning_and_project_commands(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for name in LIGHTNING_COMMANDS:
        assert f"  {name} " in out
    for group, commands in COMMANDS.items():
        for name in commands:
            assert f"{group} {name}" in out


@pytest.mark.parametrize(
    "argv",
    [[name, "--help"] for name in LIGHTNING_COMMANDS]
    + [[g, n, "--help"] for g, cmds in COMMANDS.items() for n in cmds],
    ids=lambda a: " ".join(a[:-1]),
)
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_fit_help_shows_subclass_mode_model_and_data(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "--model" in out and "--data" in out and "--trainer" in out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["trian"])
    assert exit_.value.code == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_bare_boolean_flags_are_accepted():
    assert _bare_flags(shards_build_demo, ["--overwrite", "--seed", "1"]) == [
        "--overwrite",
        "true",
        "--seed",
        "1",
    ]
    assert _bare_flags(shards_build_demo, ["--overwrite", "false"]) == ["--overwrite", "false"]
    assert _bare_flags(shards_build_demo, ["--seed", "1", "--overwrite"])[-1] == "true"


@pytest.mark.skipif(shutil.which("paras2s") is None, reason="console script not installed")
def test_console_script_is_installed():
    out = subprocess.run(["paras2s", "--help"], capture_output=True, text=True, check=True)
    assert "shards build-demo" in out.stdout
