"""``paras2s demo``: the stage list, a failing stage, and the tiny profile end to end + rerun."""

from __future__ import annotations

import json

import pytest

from paras2s_pl.cli import main
from paras2s_pl.pipeline import SYSTEMS, Stage, StageError, demo_stages, run_demo, run_stage


def test_stages_in_pipeline_order_write_under_out(tmp_path):
    stages = demo_stages(tmp_path / "out", tmp_path / "shards", "full")
    names = [s.name for s in stages]
    assert names[:7] == ["shards", "bench_set", "sft", "base", "prefs", "reward", "grpo"]
    assert names[-1] == "table" and {f"bench_{s}" for s in SYSTEMS} <= set(names)
    grpo = next(s for s in stages if s.name == "grpo").command()
    assert grpo.startswith("paras2s fit --config ") and "configs/mini/grpo.yaml" in grpo
    assert f"--model.init_args.init_from {tmp_path / 'out' / 'sft_policy'}" in grpo
    with pytest.raises(ValueError, match="--profile"):
        demo_stages(tmp_path, tmp_path, "huge")


def test_a_failing_stage_names_its_command(tmp_path, capsys):
    stage = Stage("broken", ["fit", "--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(StageError, match="paras2s fit --config .*missing.yaml"):
        run_stage(stage, tmp_path, quiet=True)
    assert not (tmp_path / ".stages" / "broken.json").exists()


@pytest.mark.slow
def test_tiny_demo_end_to_end_then_rerun_skips_every_stage(tmp_path, capsys):
    out, shards = tmp_path / "demo", tmp_path / "shards"
    summary = run_demo(out, shards, profile="tiny", quiet=True)
    printed = capsys.readouterr().out
    table = summary["table3"]
    assert set(table) == set(SYSTEMS) and all(table[s]["Overall"] is not None for s in SYSTEMS)
    assert table["topline"]["Overall"] > table["baseline"]["Overall"]
    assert table["topline"]["Overall"] > table["base"]["Overall"]
    # a float, or None when 8 held-out pairs all got one score (r undefined)
    assert {"reward_model_pearson", "reward_model_best_pearson"} <= set(summary)
    assert "held-out Pearson r with the judge" in printed
    assert summary["grpo_steps"] == 2
    assert "| topline |" in printed and "tensorboard --logdir" in printed
    for name in ("sft", "reward", "grpo"):
        assert list((out / "tb" / name).glob("version_*/events.out.tfevents.*")), name
    assert json.loads((out / "summary.json").read_text())["profile"] == "tiny"
    markers = {p.name: p.stat().st_mtime for p in (out / ".stages").glob("*.json")}
    # rerun through the CLI: every stage is found finished and skipped
    main(["demo", "--out", str(out), "--shards", str(shards), "--profile", "tiny"])
    again = capsys.readouterr().out
    assert again.count("done, skipped") == len(demo_stages(out, shards, "tiny"))
    assert {p.name: p.stat().st_mtime for p in (out / ".stages").glob("*.json")} == markers
    assert json.loads((out / "summary.json").read_text())["stage_seconds"] == {}


def test_demo_help_documents_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    for option in ("--out", "--shards", "--profile", "--force"):
        assert option in text
