"""The ``paras2s`` entry point: help lists every command; each command has --help; the
README's ``shards inspect`` line runs as printed; help types are readable."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from paras2s_pl.cli import COMMANDS, LIGHTNING_COMMANDS, main
from paras2s_pl.commands import curate, shards
from paras2s_pl.commands.parsing import bare_flags, command_args
from paras2s_pl.commands.shards import build_demo
from paras2s_pl.testing import write_tiny_set


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
    assert bare_flags(build_demo, ["--overwrite", "--seed", "1"]) == [
        "--overwrite",
        "true",
        "--seed",
        "1",
    ]
    assert bare_flags(build_demo, ["--overwrite", "false"]) == ["--overwrite", "false"]
    assert bare_flags(build_demo, ["--seed", "1", "--overwrite"])[-1] == "true"


# the venv's own script first: an activated venv is not needed to find it
SCRIPT = shutil.which("paras2s", path=str(Path(sys.executable).parent)) or shutil.which("paras2s")


@pytest.mark.skipif(SCRIPT is None, reason="console script not installed")
def test_console_script_is_installed():
    out = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, check=True)
    assert "shards build-demo" in out.stdout


def test_module_entry_runs():
    """``python -m paras2s_pl.cli`` is how the demo and sweeps run each stage."""
    out = subprocess.run(
        [sys.executable, "-m", "paras2s_pl.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "curate preferences" in out.stdout


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_command(prefix: str) -> list[str]:
    """The first command line of README.md that starts with ``prefix``, as argv (no comment)."""
    for line in README.read_text().splitlines():
        if line.startswith(prefix):
            return shlex.split(line.split("#")[0])[1:]
    raise AssertionError(f"README.md has no line starting with {prefix!r}")


def test_shards_inspect_runs_exactly_as_printed_in_the_readme(tmp_path, monkeypatch, capsys):
    argv = readme_command("paras2s shards inspect")
    assert argv[:3] == ["shards", "inspect", "shards/demo"]  # the path is given positionally
    write_tiny_set(tmp_path / "shards" / "demo", "train", n=5)
    monkeypatch.chdir(tmp_path)
    main(argv)
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[:3]] == ["s0000", "s0001", "s0002"]
    assert '"count": 5' in out and "s0003" not in out  # --limit 3 printed three samples


def test_first_required_option_may_come_first_or_by_name():
    assert command_args(shards.inspect, ["d", "--limit", "3"]) == ["--path", "d", "--limit", "3"]
    assert command_args(shards.inspect, ["--path", "d"]) == ["--path", "d"]
    assert command_args(shards.build_demo, ["d"]) == ["d"]  # no required option: left to the parser
    assert command_args(curate.preferences, ["pol", "--overwrite"]) == [
        "--policy",
        "pol",
        "--overwrite",
        "true",
    ]


def test_first_required_option_by_name_still_works(tmp_path, capsys):
    write_tiny_set(tmp_path, "test", n=2)
    main(["shards", "inspect", "--path", str(tmp_path), "--split", "test"])
    assert '"count": 2' in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [[g, n, "--help"] for g, cmds in COMMANDS.items() for n in cmds] + [["demo", "--help"]],
    ids=lambda a: " ".join(a[:-1]),
)
def test_project_help_prints_readable_types(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    out = capsys.readouterr().out
    assert "type:" in out and "<class" not in out


def test_inspect_help_says_the_path_may_come_first(capsys):
    with pytest.raises(SystemExit):
        main(["shards", "inspect", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "May be given first, without --path. (required, type: Path)" in out


@pytest.mark.parametrize("argv", [["--help"], ["fit", "--help"], ["test", "--help"]])
def test_help_points_to_the_configs(argv, capsys):
    try:
        main(argv)
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "configs/mini/<stage>.yaml" in out and "configs/<stage>.yaml" in out


def test_an_empty_budget_is_one_line_and_exit_2(tmp_path, capsys):
    write_tiny_set(tmp_path / "pool", "train", n=4)  # pair ids pair-0, pair-1
    with pytest.raises(SystemExit) as exit_:
        main(["curate", "subset", str(tmp_path / "pool"), "--out", str(tmp_path / "out"),
              "--exclude", "pair-0,pair-1"])  # fmt: skip
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("paras2s curate subset: error: ") and "selects no query" in err
