"""``paras2s test`` / ``validate`` / ``predict`` on the stage configs.

``test`` gives held-out metrics of SFT and the reward model (``test/*``); a stage without a
loop for a command (GRPO: validate and test; every stage: predict) stops in one line with
exit status 2 and says what to run instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from paras2s_pl.cli import main
from paras2s_pl.testing import SMALL_POLICY, write_tiny_policy, write_tiny_set

MINI = Path(__file__).resolve().parents[1] / "configs" / "mini"
#: The tiny reward model of tests/test_reward.py: seconds on CPU.
SMALL_REWARD = [
    "--model.init_args.model.init_args.config.hidden_size=64",
    "--model.init_args.model.init_args.config.intermediate_size=192",
    "--model.init_args.model.init_args.config.num_hidden_layers=2",
    "--model.init_args.model.init_args.config.mimo_transformer_from_layer_index=1",
]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def reward_args(command: str, prefs: Path, runs: Path) -> list[str]:
    return [
        command, "--config", str(MINI / "reward.yaml"), *SMALL_REWARD, *QUIET,
        "--data.init_args.root", str(prefs), "--data.init_args.encode_workers", "0",
        "--data.init_args.val_fraction", "0.3",
        "--trainer.logger.init_args.save_dir", str(runs),
        "--model.init_args.export_dir", str(runs / "reward_model"),
    ]  # fmt: skip


@pytest.mark.integration
def test_reward_test_reports_the_held_out_metrics_of_a_checkpoint(tmp_path):
    """``paras2s test --ckpt_path`` on the held-out pairs gives what the last validation gave."""
    prefs, runs = tmp_path / "prefs", tmp_path / "runs"
    write_tiny_set(prefs, "train", n=40, schema="preference")
    steps = ["--trainer.max_steps=2", "--trainer.val_check_interval=2"]
    fit = main([*reward_args("fit", prefs, runs), *steps, "--trainer.num_sanity_val_steps=0"])
    ckpt = runs / "reward" / "version_0" / "checkpoints" / "last.ckpt"
    test = main([*reward_args("test", prefs, runs), "--ckpt_path", str(ckpt)])
    got, want = test.trainer.callback_metrics, fit.trainer.callback_metrics
    for name in ("loss", "accuracy", "mae", "pearson", "expected_std"):
        assert torch.isfinite(got[f"test/{name}"])
        assert torch.allclose(got[f"test/{name}"], want[f"val/{name}"], atol=1e-5), name
    assert not any(k.startswith("val/") for k in got)  # named test/*, not val/*
    assert {it["key"] for it in test.datamodule.test_items} == {
        it["key"] for it in fit.datamodule.val_items
    }


@pytest.mark.integration
def test_reward_test_split_is_scored_whole(tmp_path):
    prefs, runs = tmp_path / "prefs", tmp_path / "runs"
    write_tiny_set(prefs, "train", n=8, schema="preference")
    write_tiny_set(prefs, "test", n=6, schema="preference")
    cli = main([*reward_args("test", prefs, runs), "--data.init_args.test_split", "test"])
    assert len(cli.datamodule.test_items) == 6
    assert torch.isfinite(cli.trainer.callback_metrics["test/mae"])


@pytest.mark.integration
def test_sft_test_measures_an_exported_policy_on_the_whole_test_split(tmp_path, caplog):
    demo = tmp_path / "demo"
    write_tiny_set(demo, "train", n=4, schema="demo")
    write_tiny_set(demo, "test", n=5, schema="demo")
    policy = write_tiny_policy(tmp_path / "sft_policy")
    cli = main([
        "test", "--config", str(MINI / "sft.yaml"), *QUIET,
        "--model.init_args.init_from", str(policy),
        "--data.init_args.root", str(demo), "--data.init_args.encode_workers", "0",
        "--data.init_args.val_limit", "2",  # validation's cap: test reads the whole split
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
    ])  # fmt: skip
    assert len(cli.datamodule.test_examples) == 5
    metrics = cli.trainer.callback_metrics
    for name in ("loss", "loss_text", "loss_audio", "acc_text", "acc_audio"):
        assert torch.isfinite(metrics[f"test/{name}"]), name
    assert cli.model.model.config.hidden_size == SMALL_POLICY["hidden_size"]  # the export's
    assert "without --ckpt_path" not in caplog.text  # init_from loaded trained weights


@pytest.mark.parametrize(
    ("command", "config", "stage"),
    [
        ("predict", "reward.yaml", "RewardModule has no predict_step()"),
        ("predict", "sft.yaml", "SFTModule has no predict_step()"),
        ("test", "grpo.yaml", "GRPOModule has no test_step()"),
        ("validate", "grpo.yaml", "GRPOModule has no validation_step()"),
    ],
)
def test_a_command_the_stage_has_no_loop_for_exits_2_in_one_line(command, config, stage, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--config", str(MINI / config)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()  # Lightning's start-up logs come first
    assert [line for line in err if line.startswith("paras2s ")] == err[-1:]
    assert err[-1].startswith(f"paras2s {command}: error: this stage has no")
    assert stage in err[-1] and "paras2s bench respond" in err[-1]
    assert not any("MisconfigurationException" in line for line in err)


@pytest.mark.parametrize(
    ("extra", "bars"),
    [
        ([], ["StepProgressBar"]),  # the CLI's default: step k/max_steps
        (["--trainer.enable_progress_bar", "false"], []),  # bars off: none, and no error
        (["--trainer.callbacks+", "lightning.pytorch.callbacks.TQDMProgressBar"],
         ["TQDMProgressBar"]),  # fmt: skip
    ],
)
def test_training_shows_steps_unless_bars_are_off_or_one_is_named(tmp_path, extra, bars):
    from lightning.pytorch.callbacks import ProgressBar

    from paras2s_pl.cli import lightning_cli

    prefs, runs = tmp_path / "prefs", tmp_path / "runs"
    write_tiny_set(prefs, "train", n=8, schema="preference")
    args = reward_args("fit", prefs, runs)[1:]  # run=False: no subcommand
    i = args.index("--trainer.enable_progress_bar")
    del args[i : i + 2]  # the QUIET default is what a case sets or leaves
    cli = lightning_cli([*args, *extra], run=False)
    names = [type(c).__name__ for c in cli.trainer.callbacks if isinstance(c, ProgressBar)]
    assert names == bars
