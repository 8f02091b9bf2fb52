"""``StepProgressBar``: optimizer steps of ``max_steps`` (not micro-batches), bar and lines."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from paras2s_pl.callbacks import STEP_LINE, StepProgressBar, default_step_bar

REPO = Path(__file__).resolve().parents[1]


def fit(tmp_path, bar, max_steps=4, accumulate=2, **kw):
    trainer = L.Trainer(
        max_steps=max_steps,
        accumulate_grad_batches=accumulate,
        accelerator="cpu",
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=str(tmp_path),
        **kw,
    )
    trainer.fit(BoringModel())
    return trainer


def test_lines_count_optimizer_steps_not_micro_batches(tmp_path, capsys):
    """8 micro-batches in 2s make 4 steps: lines at steps 2 and 4 of 4 (a tenth, at least 1:
    every step; ``line_every=2`` here), never 8/4."""
    trainer = fit(tmp_path, StepProgressBar(lines=True, line_every=2))
    assert trainer.global_step == 4
    printed = capsys.readouterr().out
    steps = [(int(a), int(b)) for a, b in STEP_LINE.findall(printed)]
    assert steps == [(2, 4), (4, 4)]
    assert "Epoch" not in printed and "4/4 (100%)" in printed


class LogsAfterTheStep(BoringModel):
    """Logs in its own ``on_train_batch_end`` (as GRPO does), after the callbacks' hook."""

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.log("seen", float(self.global_step), prog_bar=True, on_step=True, on_epoch=False)


def test_a_line_shows_its_own_steps_metrics(tmp_path, capsys):
    trainer = L.Trainer(max_steps=4, accumulate_grad_batches=2, accelerator="cpu", logger=False,
                        callbacks=[StepProgressBar(lines=True, line_every=2)],
                        enable_checkpointing=False, enable_model_summary=False,
                        limit_val_batches=0, default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(LogsAfterTheStep())
    lines = [x for x in capsys.readouterr().out.splitlines() if STEP_LINE.search(x)]
    assert [x.split(": ", 1)[1] for x in lines] == ["seen=2", "seen=4"]


def test_tqdm_bar_total_is_max_steps(tmp_path):
    bar = StepProgressBar(lines=False)
    fit(tmp_path, bar, max_steps=3, accumulate=4)
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (3, 3)
    assert bar.train_progress_bar.desc.startswith("train")


def test_training_by_epochs_keeps_lightnings_bar(tmp_path, capsys):
    fit(tmp_path, StepProgressBar(lines=True), max_steps=-1, accumulate=1, max_epochs=1,
        limit_train_batches=3)  # fmt: skip
    assert capsys.readouterr().out.strip().endswith("epoch 1/1, step 3")


@pytest.mark.parametrize("stage", ["sft", "reward", "grpo"])
def test_the_bar_is_added_to_a_mini_config_on_the_command_line(stage):
    from paras2s_pl.cli import lightning_cli

    cli = lightning_cli(["--config", str(REPO / f"configs/mini/{stage}.yaml"),
                         "--trainer.callbacks+", "paras2s_pl.callbacks.StepProgressBar"],
                        run=False)  # fmt: skip
    kinds = [type(c) for c in cli.trainer.callbacks]
    assert ModelCheckpoint in kinds and kinds.count(StepProgressBar) == 1
    assert cli.trainer.progress_bar_callback.__class__ is StepProgressBar


def test_default_step_bar_only_where_lightning_takes_one():
    """What a CLI default may add: none with bars off or a bar already named."""
    from lightning.pytorch.callbacks import RichProgressBar

    (bar,) = default_step_bar({"callbacks": [ModelCheckpoint()]})
    assert isinstance(bar, StepProgressBar)
    assert len(default_step_bar({})) == len(default_step_bar({"callbacks": None})) == 1
    assert default_step_bar({"enable_progress_bar": False}) == []
    assert default_step_bar({"callbacks": [ModelCheckpoint(), RichProgressBar()]}) == []
    assert default_step_bar({"callbacks": StepProgressBar()}) == []
