"""``paras2s sweep``: grid parsing, names, commands and SLURM files, the runner's bookkeeping
(with a stand-in interpreter: milliseconds) and one real 2-point sweep of the mini GRPO config.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
import stat
import sys
from pathlib import Path

import pytest

from paras2s_pl import sweep
from paras2s_pl.callbacks import STEP_LINE
from paras2s_pl.sweep import (
    load_results,
    normalize_key,
    parse_grid,
    parse_tags,
    point_names,
    read_bench_row,
    run_sweep,
    sweep_argv,
    sweep_cli,
)

REPO = Path(__file__).resolve().parents[1]
GRPO = REPO / "configs/mini/grpo.yaml"
GS, BETA = "model.init_args.group_size", "model.init_args.beta"


# ------------------------------------------------------------------------------ grid specs
def test_parse_grid_is_the_product_in_spec_order_last_key_fastest():
    points = parse_grid(["model.group_size=[2,4]", "model.beta=[0.0, 0.2]", "trainer.max_steps=5"])
    assert points == [
        {GS: 2, BETA: 0.0, "trainer.max_steps": 5},
        {GS: 2, BETA: 0.2, "trainer.max_steps": 5},
        {GS: 4, BETA: 0.0, "trainer.max_steps": 5},
        {GS: 4, BETA: 0.2, "trainer.max_steps": 5},
    ]
    assert [list(p) for p in points] == [[GS, BETA, "trainer.max_steps"]] * 4
    assert point_names(points)[1] == "group_size=2,beta=0.2,max_steps=5"
    assert parse_grid([]) == [{}] and point_names([{}]) == ["base"]


def test_parse_grid_reads_yaml_values():
    (point,) = parse_grid(["model.x=foo"])
    assert point == {"model.init_args.x": "foo"}
    points = parse_grid(['model.x=[true, null, abc, 1.0e-3, "0.10", [1, 2]]'])
    values = [p["model.init_args.x"] for p in points]
    assert values == [True, None, "abc", 0.001, "0.10", [1, 2]]
    assert type(values[3]) is float and type(values[4]) is str


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("model.group_size", GS),
        ("model.init_args.group_size", GS),
        ("model.scorer.init_args.path", "model.init_args.scorer.init_args.path"),
        ("model.class_path", "model.class_path"),
        ("data.batch_size", "data.init_args.batch_size"),
        ("data.init_args.root", "data.init_args.root"),
        ("trainer.max_steps", "trainer.max_steps"),
        ("trainer.logger.init_args.name", "trainer.logger.init_args.name"),
        ("seed_everything", "seed_everything"),
        (" model.beta ", BETA),
    ],
)
def test_keys_are_normalised_to_lightningcli_subclass_mode(key, expected):
    assert normalize_key(key) == expected


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("model.group_size", "KEY=VALUE"),
        ("=[1,2]", "KEY=VALUE"),
        ("model..x=[1]", "not a config key"),
        ("model.x-y=[1]", "not a config key"),
        ("model.x=[]", "no values"),
        ("model.x=[1, 2", "not YAML"),
    ],
)
def test_bad_grid_specs_name_the_spec(spec, words):
    with pytest.raises(ValueError, match="--grid") as err:
        parse_grid([spec])
    assert repr(spec) in str(err.value) and words in str(err.value)
    assert "\n" not in str(err.value)


def test_a_key_swept_twice_is_an_error_even_in_two_spellings():
    with pytest.raises(ValueError, match="already in another --grid"):
        parse_grid(["model.group_size=[2]", "model.init_args.group_size=[4]"])


def test_tags_and_names():
    assert parse_tags(["stage=sft", "sft_hours=0.3", "note=a b"]) == {
        "stage": "sft",
        "sft_hours": 0.3,
        "note": "a b",
    }
    with pytest.raises(ValueError, match="given twice"):
        parse_tags(["a=1", "a=2"])
    # short names: the last part, more where two keys would clash; unsafe characters go
    points = parse_grid(["model.lr=[0.1]", "model.scorer.init_args.lr=[1]", "data.root=[a/b c]"])
    assert point_names(points) == ["lr=0.1,scorer.lr=1,root=a_b_c"]
    assert point_names(parse_grid(["model.x=[[1,2], true, null]"])) == [
        "x=_1_2_",
        "x=true",
        "x=null",
    ]
    with pytest.raises(ValueError, match="both named"):
        point_names(parse_grid(["model.x=[a/b, a_b]"]))


def test_sweep_argv_lets_options_repeat_and_flags_be_bare():
    argv = ["--config", "c.yaml", "--grid", "a=[1]", "--grid=b=[2]", "--set", "x=1", "--tag",
            "t=1", "--dry_run", "--force", "--out", "o"]  # fmt: skip
    assert sweep_argv(argv) == ["--config", "c.yaml", "--grid+", "a=[1]", "--grid+", "b=[2]",
                                "--set+", "x=1", "--tag+", "t=1", "--dry_run", "true", "--force",
                                "true", "--out", "o"]  # fmt: skip
    assert sweep_argv(["--force"]) == ["--force", "true"]
    assert sweep_argv(["--dry_run", "false"]) == ["--dry_run", "false"]


# ------------------------------------------------------------------------- dry run and CLI
def test_dry_run_writes_one_command_per_point_and_a_slurm_array(tmp_path, capsys):
    out = tmp_path / "sweep"
    sweep_cli(["--config", str(GRPO), "--grid", "model.group_size=[2,4,8]",
               "--grid", "model.beta=[0.0,0.2]", "--set", "trainer.max_steps=20",
               "--set", "trainer.callbacks=[]", "--tag", "stage=grpo", "--out", str(out),
               "--dry_run"])  # fmt: skip
    printed = capsys.readouterr().out
    lines = (out / "commands.sh").read_text().splitlines()
    assert len(lines) == 6 and all(line in printed for line in lines)
    names = ["group_size=2,beta=0.0", "group_size=2,beta=0.2", "group_size=4,beta=0.0",
             "group_size=4,beta=0.2", "group_size=8,beta=0.0", "group_size=8,beta=0.2"]  # fmt: skip
    values = [(g, b) for g in (2, 4, 8) for b in ("0.0", "0.2")]
    for line, name, (gs, beta) in zip(lines, names, values, strict=True):
        args = shlex.split(line)
        fit = args[args.index("-m") - 1 :]
        assert fit[:6] == [sys.executable, "-m", "paras2s_pl.cli", "fit", "--config", str(GRPO)]
        opts = dict(zip(fit[6::2], fit[7::2], strict=False))
        point = out / name
        assert opts["--model.init_args.group_size"] == str(gs)
        assert opts["--model.init_args.beta"] == beta
        assert opts["--trainer.max_steps"] == "20" and opts["--trainer.callbacks"] == "[]"
        assert opts["--trainer.callbacks+"] == "paras2s_pl.callbacks.StepProgressBar"
        assert opts["--trainer.logger.init_args.save_dir"] == str(point / "tb")
        assert opts["--model.init_args.export_dir"] == str(point / "export")
        assert f"> {shlex.quote(str(point / 'log.txt'))} 2>&1" in line
        assert line.endswith(f"touch {shlex.quote(str(point / '.done'))}")
        assert "bench" not in line
    sbatch = (out / "sweep.sbatch").read_text()
    assert "#SBATCH --array=0-5" in sbatch and "SLURM_ARRAY_TASK_ID + 1" in sbatch
    assert str(out / "commands.sh") in sbatch
    assert sorted(p.name for p in out.iterdir()) == ["commands.sh", "sweep.sbatch"]  # ran nothing


def test_dry_run_benches_policy_stages_only(tmp_path):
    testset = tmp_path / "testset"
    testset.mkdir()
    got = run_sweep(GRPO, parse_grid(["model.group_size=[2]"]), tmp_path / "g",
                    bench_testset=testset, bench_split="dev", dry_run=True)  # fmt: skip
    (run,) = got["runs"]
    assert run["status"] == "planned" and len(run["commands"]) == 3
    respond, bench = (shlex.split(c) for c in run["commands"][1:])
    name, point = "group_size=2", tmp_path / "g" / "group_size=2"
    assert respond[3:] == ["bench", "respond", "--system", name, "--policy", str(point / "export"),
                           "--testset", str(testset), "--split", "dev", "--out",
                           str(point / "responses"), "--overwrite", "true"]  # fmt: skip
    assert bench[3:] == ["bench", "run", "--testset", str(testset), "--split", "dev",
                         "--responses", str(point / "responses"), "--system", name, "--out",
                         str(point / "bench")]  # fmt: skip
    reward = run_sweep(REPO / "configs/mini/reward.yaml", parse_grid(["model.lr=[1.0e-3]"]),
                       tmp_path / "r", bench_testset=testset, dry_run=True)  # fmt: skip
    assert len(reward["runs"][0]["commands"]) == 1  # a reward model is not benched


def test_user_errors_are_one_line(tmp_path, capsys):
    cases = [
        (["--config", str(tmp_path / "nope.yaml"), "--grid", "model.x=[1]"], "no such file"),
        (["--config", str(GRPO), "--grid", "model.x"], "KEY=VALUE"),
        (["--config", str(GRPO), "--grid", "model.beta=[0.1]", "--set", "model.beta=0.2"],
         "both swept (--grid) and fixed (--set)"),
        (["--config", str(GRPO), "--grid", "model.export_dir=[a]"], "set per point by the sweep"),
        (["--config", str(GRPO), "--grid", "model.beta=[0.1]", "--bench_testset",
          str(tmp_path / "none")], "--bench_testset"),
    ]  # fmt: skip
    for args, words in cases:
        with pytest.raises(SystemExit) as exit_:
            sweep_cli([*args, "--out", str(tmp_path / "o"), "--dry_run"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("paras2s sweep: error:") and words in err and "\n" not in err


# ----------------------------------------------------------------------- results and tables
def test_read_bench_row_from_a_hand_written_table(tmp_path):
    row = {"Age": 2.5, "Emotion": 3.0, "Gender": 2.0, "Sarcasm": 4.0, "Synthetic avg": 2.875,
           "IEMOCAP": None, "MELD": None, "Real avg": None, "Overall": 2.875}  # fmt: skip
    table = {"columns": list(row), "systems": ["group_size=2"], "table3": {"group_size=2": row}}
    (tmp_path / "table.json").write_text(json.dumps(table))
    assert read_bench_row(tmp_path, "group_size=2") == row
    assert read_bench_row(tmp_path / "table.json", "group_size=2") == row
    assert read_bench_row(tmp_path, "other") is None
    assert read_bench_row(tmp_path / "missing", "group_size=2") is None


FAKE_PYTHON = """\
#!{python}
# Stand-in for `python -m paras2s_pl.cli ...`: writes what fit and bench would, instantly.
import json, sys
from pathlib import Path

args = sys.argv[3:]  # after -m paras2s_pl.cli
skip = 1 if args[0] == "fit" else 2
opts = dict(zip(args[skip::2], args[skip + 1 :: 2]))
print("fake", " ".join(args[:2]), flush=True)
if "boom" in args:
    print("error: Parser key 'model.init_args.group_size': boom is not an int", file=sys.stderr)
    sys.exit(3)
if args[0] == "fit":
    export = Path(opts["--model.init_args.export_dir"])
    export.mkdir(parents=True, exist_ok=True)
    (export / "config.json").write_text("{{}}")
    gs = float(opts.get("--model.init_args.group_size", 1))
    record = {{"global_step": int(opts.get("--trainer.max_steps", 3)),
              "metrics": {{"train/reward": gs}}, "best": {{"val/x": gs / 2}} if gs > 2 else {{}}}}
    (export / "metrics.json").write_text(json.dumps(record))
elif args[:2] == ["bench", "respond"]:
    Path(opts["--out"]).mkdir(parents=True, exist_ok=True)
elif args[:2] == ["bench", "run"]:
    out = Path(opts["--out"])
    out.mkdir(parents=True, exist_ok=True)
    gs = float(opts["--system"].split("=")[1])
    row = {{"Age": gs, "Overall": gs / 2, "MELD": None}}
    (out / "table.json").write_text(json.dumps({{"table3": {{opts["--system"]: row}}}}))
"""


@pytest.fixture
def fake_python(tmp_path) -> str:
    path = tmp_path / "fake_python"
    path.write_text(FAKE_PYTHON.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_runner_records_failures_skips_done_points_and_benches(tmp_path, fake_python, capsys):
    out, testset = tmp_path / "sweep", tmp_path / "testset"
    testset.mkdir()
    kwargs = dict(overrides=["trainer.max_steps=7"], tags={"stage": "grpo", "sft_hours": 0.3},
                  bench_testset=testset, python=fake_python)  # fmt: skip
    points = parse_grid(["model.group_size=[2, boom, 4]"])
    got = run_sweep(GRPO, points, out, **kwargs)
    assert got == load_results(out) == load_results(out / "results.json")
    assert got["stage"] == "grpo" and got["config"] == str(GRPO)
    assert got["grid"] == {GS: [2, "boom", 4]} and got["overrides"] == ["trainer.max_steps=7"]
    ok, failed, ok4 = got["runs"]
    assert [r["status"] for r in got["runs"]] == ["ok", "failed", "ok"]  # the sweep went on
    assert ok["params"] == {GS: 2} and ok["tags"] == {"stage": "grpo", "sft_hours": 0.3}
    assert ok["global_step"] == 7 and ok["metrics"] == {"train/reward": 2.0} and ok["best"] == {}
    assert ok["bench"] == {"Age": 2.0, "Overall": 1.0, "MELD": None}
    assert ok4["best"] == {"val/x": 2.0} and ok4["bench"]["Overall"] == 2.0
    assert failed["returncode"] == 3 and failed["failed_step"] == "fit"
    assert "boom is not an int" in failed["log_tail"] and failed["bench"] is None
    assert failed["metrics"] == {} and failed["global_step"] is None
    log = (out / "group_size=2" / "log.txt").read_text()
    assert log.count("$ ") == 3 and "fake bench run" in log
    assert (out / "group_size=2/.done").exists() and not (out / "group_size=boom/.done").exists()
    assert len((out / "commands.sh").read_text().splitlines()) == 3
    printed = capsys.readouterr().out
    assert "[2/3] group_size=boom: failed (exit 3 in fit" in printed
    assert "[3/3] group_size=4: ok" in printed and "bench Overall=2.000" in printed

    header, rows = _csv(out / "results.csv")
    assert header == ["name", "status", "seconds", "global_step", f"param:{GS}", "tag:stage",
                      "tag:sft_hours", "metric:train/reward", "best:val/x", "bench:Age",
                      "bench:Overall", "bench:MELD"]  # fmt: skip
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert rows[0]["param:" + GS] == "2" and rows[1]["param:" + GS] == "boom"
    assert rows[0]["best:val/x"] == "" and rows[2]["best:val/x"] == "2.0"
    assert rows[0]["bench:MELD"] == "" and rows[0]["tag:sft_hours"] == "0.3"
    assert float(rows[0]["seconds"]) >= 0 and rows[1]["global_step"] == ""

    # a rerun skips the finished points, still lists them, and retries the failed one
    again = run_sweep(GRPO, points, out, **kwargs)
    assert [r["status"] for r in again["runs"]] == ["skipped-done", "failed", "skipped-done"]
    assert again["runs"][0]["metrics"] == ok["metrics"] and again["runs"][0]["bench"] == ok["bench"]
    assert again["runs"][0]["seconds"] == ok["seconds"]
    assert (out / "group_size=2" / "log.txt").read_text() == log  # not run again
    # --force runs them again
    forced = run_sweep(GRPO, points[:1], out, force=True, **kwargs)
    assert [r["status"] for r in forced["runs"]] == ["ok"]
    assert load_results(out)["runs"] == forced["runs"]


def test_a_non_policy_export_is_not_benched_and_an_array_task_done_marker_counts(
    tmp_path, fake_python
):
    out, testset = tmp_path / "sweep", tmp_path / "testset"
    testset.mkdir()
    (out / "group_size=4").mkdir(parents=True)
    (out / "group_size=4" / ".done").touch()  # as commands.sh leaves it
    fake = Path(fake_python)
    fake.write_text(fake.read_text().replace('"config.json"', '"reward_config.json"'))
    got = run_sweep(GRPO, parse_grid(["model.group_size=[2, 4]"]), out,
                    bench_testset=testset, python=fake_python)  # fmt: skip
    first, second = got["runs"]
    assert first["status"] == "ok" and first["bench"] is None
    assert "no policy export" in (out / "group_size=2" / "log.txt").read_text()
    assert second["status"] == "skipped-done" and second["seconds"] is None


@pytest.mark.parametrize(
    ("overrides", "grid", "wanted"),
    [
        ([], [], True),
        ([("trainer.callbacks", "[]")], [], True),
        ([("trainer.enable_progress_bar", "false")], [], False),  # Lightning refuses a bar
        ([("trainer.enable_progress_bar", "False")], [], False),
        ([("trainer.callbacks", '[{"class_path": "lightning.pytorch.callbacks.RichProgressBar"}]')],
         [], False),  # a second bar is refused too
        ([], ["trainer.callbacks"], False),
        ([], ["trainer.enable_progress_bar"], False),
    ],
)  # fmt: skip
def test_the_step_bar_is_added_only_where_lightning_takes_it(overrides, grid, wanted):
    data = sweep.read_stage_config(GRPO)
    assert sweep.wants_step_bar(data, overrides, grid) is wanted
    off = {**data, "trainer": {**data["trainer"], "enable_progress_bar": False}}
    assert not sweep.wants_step_bar(off, [])


def test_last_step_reads_the_newest_step_line(tmp_path):
    log = tmp_path / "log.txt"
    assert sweep.last_step(log) is None  # not there yet
    log.write_text("$ python -m paras2s_pl.cli fit\nencode: 50%|##   | 4/8\r")
    assert sweep.last_step(log) is None
    log.write_text(log.read_text() + "step 2/20 (10%), 3 s\nx\n" * 3 + "step 12/20 (60%): a=1\n")
    assert sweep.last_step(log) == (12, 20)
    assert sweep.STEP_LINE.pattern == STEP_LINE.pattern  # the bar's format, kept in step


def test_a_running_point_prints_its_steps_from_the_log(tmp_path, monkeypatch, capsys):
    """A child writing ``step k/3`` lines: the runner reads the log while it waits and prints
    each new step once (and no more often than PROGRESS_EVERY_S)."""
    child = ("import time\nfor k in (1, 2, 3):\n    print(f'step {k}/3 (x%)', flush=True)\n"
             "    time.sleep(0.6)\n")  # fmt: skip
    cmd = [sys.executable, "-c", child]
    monkeypatch.setattr(sweep.runner, "POLL_S", 0.05)
    monkeypatch.setattr(sweep.runner, "PROGRESS_EVERY_S", 0.0)
    log = tmp_path / "log.txt"
    progress = sweep.PointProgress("[1/2] g=2", log)
    assert sweep.runner._run_logged(cmd, log, {}, progress) == 0
    lines = capsys.readouterr().out.splitlines()
    steps = [int(line.split("step ")[1].split("/")[0]) for line in lines]
    assert lines and all(x.startswith("[1/2] g=2: step ") and "/3 (" in x for x in lines)
    assert steps == sorted(set(steps)) and set(steps) <= {1, 2, 3}
    monkeypatch.setattr(sweep.runner, "PROGRESS_EVERY_S", 3600.0)
    sweep.runner._run_logged(cmd, log, {}, sweep.PointProgress("p", log))
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_load_results_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no sweep results"):
        load_results(tmp_path)


# ------------------------------------------------------------------------ a real mini sweep
@pytest.fixture
def tiny_inputs(tmp_path) -> dict[str, Path]:
    from paras2s_pl.models.reward import TokensRewardModel
    from paras2s_pl.testing import SMALL_POLICY, write_tiny_policy, write_tiny_set

    root = tmp_path / "prompts"
    write_tiny_set(root, "rl", n=8, schema="prompt")
    TokensRewardModel(config=SMALL_POLICY).save_pretrained(tmp_path / "rm")
    return {"root": root, "policy": write_tiny_policy(tmp_path / "sft_policy"),
            "rm": tmp_path / "rm"}  # fmt: skip


@pytest.mark.integration
def test_real_two_point_grpo_sweep(tiny_inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "sweep"
    overrides = [
        f"data.init_args.root={tiny_inputs['root']}",
        "data.init_args.batch_size=2",
        f"model.init_args.init_from={tiny_inputs['policy']}",
        f"model.init_args.scorer.init_args.path={tiny_inputs['rm']}",
        "trainer.max_steps=2",
        "model.init_args.sampling.max_new_tokens=8",
        "trainer.callbacks=[]",  # the sweep adds its step bar
        "data.init_args.encode_workers=0",
    ]
    args = ["--config", str(GRPO), "--out", str(out), "--tag", "stage=grpo"]
    for o in overrides:
        args += ["--set", o]
    sweep_cli([*args, "--grid", "model.group_size=[2,4]"])
    results = load_results(out)
    assert results["stage"] == "grpo" and results["tags"] == {"stage": "grpo"}
    runs = results["runs"]
    assert [r["name"] for r in runs] == ["group_size=2", "group_size=4"]
    for run, gs in zip(runs, (2, 4), strict=True):
        assert run["status"] == "ok" and run["returncode"] == 0, run.get("log_tail")
        assert run["params"] == {GS: gs} and run["global_step"] == 2
        assert math.isfinite(run["metrics"]["train/reward"]) and run["bench"] is None
        point = out / run["name"]
        assert (point / "export" / "config.json").exists() and (point / ".done").exists()
        assert list((point / "tb").rglob("events.out.tfevents.*"))
        assert "group_size: " + str(gs) in next((point / "tb").rglob("config.yaml")).read_text()
        assert sweep.last_step(point / "log.txt") == (2, 2)
    header, rows = _csv(out / "results.csv")
    assert header[:6] == ["name", "status", "seconds", "global_step", f"param:{GS}", "tag:stage"]
    assert "metric:train/reward" in header and "metric:train/kl" in header
    assert [r["global_step"] for r in rows] == ["2", "2"]
    capsys.readouterr()

    # a rerun skips both (no fit) and keeps their numbers; a bad value fails, the sweep goes on
    sweep_cli([*args, "--grid", "model.group_size=[two,2,4]"])
    printed = capsys.readouterr().out
    again = load_results(out)["runs"]
    assert [r["status"] for r in again] == ["failed", "skipped-done", "skipped-done"]
    assert again[0]["returncode"] != 0 and "group_size" in again[0]["log_tail"]
    assert [r["metrics"] for r in again[1:]] == [r["metrics"] for r in runs]
    assert "group_size=two: failed" in printed and "[3/3] group_size=4: skipped-done" in printed
    assert printed.count(": running") == 1  # only the failing point ran
    assert sweep.RESULTS_CSV in printed


def test_known_stage_table_matches_the_classes():
    import importlib

    from paras2s_pl.modules.policy import PolicyModule

    for class_path, policy in sweep.KNOWN_STAGES.items():
        module, _, name = class_path.rpartition(".")
        assert issubclass(getattr(importlib.import_module(module), name), PolicyModule) == policy
    assert sweep.is_policy_config({"model": {"class_path": "paras2s_pl.modules.sft.SFTModule"}})
    assert not sweep.is_policy_config({"model": {"class_path": "my.RewardThing"}})
