"""``paras2s demo``: the stage list, a failing stage, the console blocks, the closing report
and the tiny profile end to end + rerun."""

from __future__ import annotations

import io
import json

import pytest

from paras2s_pl import pipeline
from paras2s_pl.cli import main
from paras2s_pl.pipeline import (
    SYSTEMS,
    Stage,
    StageError,
    demo_stages,
    first_last,
    pump,
    report,
    run_demo,
    run_stage,
)


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


def test_long_profile_benches_the_whole_test_split_of_the_demo_shards(tmp_path):
    stages = {s.name: s for s in demo_stages(tmp_path / "out", tmp_path / "shards", "long")}
    assert "bench_set" not in stages  # no subset: every test query
    assert f"--testset {tmp_path / 'shards'} " in stages["bench_sft"].command()
    assert stages["grpo"].args[-2:] == ["--trainer.max_steps", "150"]


def test_fit_stages_show_steps_and_tiny_builds_its_own_shards(tmp_path):
    out, full = tmp_path / "out", tmp_path / "shards_demo"
    for profile in ("full", "tiny"):
        stages = {s.name: s for s in demo_stages(out, full, profile)}
        for name in ("sft", "reward", "grpo"):
            cmd = stages[name].command()
            assert "--trainer.callbacks+ paras2s_pl.callbacks.StepProgressBar" in cmd, name
            assert "enable_progress_bar" not in cmd, name
    tiny = {s.name: s for s in demo_stages(out, full, "tiny")}
    assert tiny["shards"].outputs == [out / "shards" / "rl.manifest.json"]
    assert str(full) not in " ".join(s.command() for s in tiny.values())  # whatever --shards has
    assert f"--data.root {out / 'shards'}" in tiny["grpo"].command()


def test_pump_copies_everything_and_echoes_lines_and_some_bar_updates(monkeypatch):
    """Whole lines are echoed; of a bar's carriage-return updates (tqdm writes ``\\r`` + the
    bar) one per interval, and the line a bar ends with."""
    raw = b"start\n\r 10%\r 20%\r 30%\r 40%\nstep 2/4 (50%)\r\n\r   \rtail"
    log, echoed = io.BytesIO(), []
    monkeypatch.setattr(pipeline, "ECHO_EVERY_S", 3600.0)
    pump(io.BufferedReader(io.BytesIO(raw)), log, echoed.append)
    assert log.getvalue() == raw
    assert echoed == ["start", " 10%", " 40%", "step 2/4 (50%)", "tail"]
    echoed.clear()
    monkeypatch.setattr(pipeline, "ECHO_EVERY_S", 0.0)
    pump(io.BufferedReader(io.BytesIO(raw)), io.BytesIO(), echoed.append)
    assert echoed == ["start", " 10%", " 20%", " 30%", " 40%", "step 2/4 (50%)", "tail"]


def test_every_stage_is_a_block_with_its_time(tmp_path, capsys):
    """The header, the stage's own lines prefixed with its name, then ``done in N s``; a
    quiet (side-lane) stage prints only the two ends, its output in the log."""
    run_stage(Stage("help", ["shards", "inspect", "--help"]), tmp_path)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("[paras2s demo] help: paras2s shards inspect --help")
    assert lines[-1].startswith("[paras2s demo] help: done in ") and lines[-1].endswith(" s")
    body = lines[1:-1]
    assert body and all(line.startswith("help     | ") for line in body)
    assert any("usage:" in line for line in body)
    run_stage(Stage("quiet", ["shards", "inspect", "--help"]), tmp_path, quiet=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("[paras2s demo] quiet: done in ")
    assert "usage:" in (tmp_path / "logs" / "quiet.log").read_text()


def test_grpo_reward_first_and_last_from_the_newest_run(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    for version, rewards in (("version_0", [9.0, 9.0]), ("version_1", [1.25, 2.0, 2.5])):
        with SummaryWriter(str(tmp_path / version)) as writer:
            for step, value in enumerate(rewards):
                writer.add_scalar("train/reward", value, step)
    with SummaryWriter(str(tmp_path / "version_2")) as writer:  # stopped before a step
        writer.add_scalar("train/other", 0.0, 0)
    assert first_last(tmp_path) == (1.25, 2.5)
    assert first_last(tmp_path / "missing") == (None, None)


def test_report_rounds_the_grpo_reward_first_to_last(tmp_path):
    summary = {"table3": {"sft": {"Overall": 2.95444}}, "grpo_steps": 20,
               "grpo_first_reward": 2.41234, "grpo_final_reward": 2.9180707931518555,
               "reward_model_pearson": None}  # fmt: skip
    text = report(summary, tmp_path)
    assert "GRPO: 20 steps, train/reward 2.412 → 2.918 (first → last step)" in text
    assert "| sft | – | – | – | – | 2.954 |" in text and "2.91807" not in text


def test_summary_and_report_carry_paired_cis_against_sft_and_sft_against_base(tmp_path, capsys):
    """The demo's own table command (``--compare`` of :data:`pipeline.COMPARISONS`) on bench
    results made here, then summary.json's comparisons and the closing lines from them."""
    from bench_stubs import score_rows, write_runs

    sft = score_rows("sft", {"age": [(3.0, 4.0), (2.0, 5.0)], "gender": [(1.0, 3.0)] * 3})
    systems = {s: [{**r, "system": s, "score": r["score"] + d} for r in sft]
               for s, d in (("base", -1.0), ("sft", 0.0), ("grpo", 0.25), ("baseline", -1.0),
                            ("topline", 1.0))}  # fmt: skip
    write_runs(tmp_path / "bench", systems)
    table = demo_stages(tmp_path, tmp_path / "shards", "full")[-1]
    main(table.args)
    assert "| grpo − sft | +0.250 | [+0.250, +0.250] | 0.000 | 5 | 0 | higher |" in (
        capsys.readouterr().out
    )
    got = pipeline.summarize(tmp_path)["comparisons"]
    assert [(c["a"], c["b"]) for c in got] == list(pipeline.COMPARISONS)
    assert [(c["difference"], c["low"], c["high"], c["verdict"]) for c in got] == [
        (0.25, 0.25, 0.25, "higher"), (-1.0, -1.0, -1.0, "lower"), (1.0, 1.0, 1.0, "higher"),
        (1.0, 1.0, 1.0, "higher")]  # fmt: skip
    assert all(c["pairs"] == 5 and c["se"] == 0.0 and c["n_resamples"] == 10_000 for c in got)
    text = report(json.loads(json.dumps({"table3": {}, **{"comparisons": got}})), tmp_path)
    assert "  sft − base  +1.000 [+1.000, +1.000]  se 0.000  (5 pairs)  higher" in text


def test_report_gives_the_reward_models_cis_the_resolution_and_word_shares(tmp_path):
    shares = {"text_words": 0.97, "asr_words": 1.0, "heard": 0.6, "generic": 0.25,
              "generic_text": 0.2, "n": 32, "words": 20.0}  # fmt: skip
    comparison = {"a": "grpo", "b": "sft", "difference": 0.1, "low": -0.3, "high": 0.5,
                  "se": 0.2, "pairs": 16, "queries": 32, "dropped": 0, "confidence": 0.95,
                  "n_resamples": 10_000, "seed": 0, "verdict": "no difference"}  # fmt: skip
    summary = {"table3": {}, "profile": "full", "comparisons": [comparison],
               "reward_model_pearson": 0.61, "reward_model_pearson_ci95": [0.4, 0.75],
               "reward_model_within_pearson": 0.3, "reward_model_within_ci95": [0.1, 0.5],
               "reward_model_heldout_queries": 48, "reward_model_exported_step": 150,
               "reward_model_last_pearson": 0.5, "word_shares": {"sft": shares}}  # fmt: skip
    text = report(summary, tmp_path)
    assert "32 bench queries resolve differences beyond about ±0.40" in text
    assert "--profile long" in text
    assert ("48 held-out queries: Pearson r 0.610 [+0.40, +0.75], within query 0.300 "
            "[+0.10, +0.50] (exported: the best validation, step 150; last 0.500)") in text
    assert "sft      mini-world words: " in text


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
    stages = demo_stages(out, shards, "tiny")
    assert printed.count("done in ") == len(stages)  # every stage, the chain's too
    table = summary["table3"]
    assert set(table) == set(SYSTEMS) and all(table[s]["Overall"] is not None for s in SYSTEMS)
    assert table["topline"]["Overall"] > table["baseline"]["Overall"]
    assert table["topline"]["Overall"] > table["base"]["Overall"]
    # a float, or None when 8 held-out pairs all got one score (r undefined)
    assert {"reward_model_pearson", "reward_model_within_pearson", "reward_model_exported_step",
            "word_shares"} <= set(summary)  # fmt: skip
    assert "held-out queries: Pearson r" in printed and "mini-world words:" in printed
    assert summary["word_shares"]["sft"]["text_words"] is not None
    assert summary["grpo_steps"] == 2
    assert summary["grpo_first_reward"] is not None and "→" in printed
    assert not shards.exists() and (out / "shards" / "rl.manifest.json").exists()
    assert "| topline |" in printed and "tensorboard --logdir" in printed
    for name in ("sft", "reward", "grpo"):
        assert list((out / "tb" / name).glob("version_*/events.out.tfevents.*")), name
    assert json.loads((out / "summary.json").read_text())["profile"] == "tiny"
    markers = {p.name: p.stat().st_mtime for p in (out / ".stages").glob("*.json")}
    # rerun through the CLI: every stage is found finished and skipped
    main(["demo", "--out", str(out), "--shards", str(shards), "--profile", "tiny"])
    again = capsys.readouterr().out
    assert again.count("done, skipped") == len(stages)
    assert {p.name: p.stat().st_mtime for p in (out / ".stages").glob("*.json")} == markers
    assert json.loads((out / "summary.json").read_text())["stage_seconds"] == {}


def test_demo_help_documents_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    for option in ("--out", "--shards", "--profile", "--force"):
        assert option in text
