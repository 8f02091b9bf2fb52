"""Trainer callbacks shared by the stages.

:class:`StepProgressBar` counts optimizer steps of ``trainer.max_steps``. Every stage config
trains by steps (``max_epochs: -1``), where Lightning's bars count batches of an epoch:
``Epoch 0/-2`` and, with gradient accumulation (GRPO's micro-batches), ``8/4``. Add it to a
fit with ``--trainer.callbacks+ paras2s_pl.callbacks.StepProgressBar`` (``paras2s demo`` and
``paras2s sweep`` do), or let the CLI add it by default with :func:`default_step_bar`: not in
the configs' callbacks, where ``--trainer.enable_progress_bar false`` would make Lightning
refuse the whole config (it rejects a bar callback with bars off). On a terminal it is a
tqdm bar; in a pipe or a log file it prints a plain line every tenth of the run
(:data:`STEP_LINE` is how ``paras2s sweep`` finds the step)::

    step 30/300 (10%), 14 s, ~126 s left: train/loss=2.31
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

#: A progress line of :class:`StepProgressBar` (also what its tqdm bar shows): the step and
#: ``max_steps``.
STEP_LINE = re.compile(r"\bstep (\d+)/(\d+)\b")


def _text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class StepProgressBar(TQDMProgressBar):
    """Training progress as ``step k/max_steps`` (optimizer steps), tqdm or plain lines.

    With ``trainer.max_steps`` unset (training by epochs) it is Lightning's tqdm bar.
    Validation and sanity-check bars are Lightning's on a terminal and silent otherwise.

    Args:
        refresh_rate: Update the tqdm bar every this many steps.
        lines: Plain lines instead of a bar; ``None``: when stdout is not a terminal (and
            not a notebook).
        line_every: Steps between plain lines; 0: a tenth of ``max_steps``.
    """

    def __init__(self, refresh_rate: int = 1, lines: bool | None = None, line_every: int = 0):
        super().__init__(refresh_rate=refresh_rate)
        if lines is None:
            lines = not sys.stdout.isatty() and "ipykernel" not in sys.modules
        self.lines = lines
        self.line_every = line_every
        self._start = 0.0
        self._first = 0  # global_step at start: a resumed run counts its ETA from there
        self._shown = -1
        self._pending = False  # a line due, printed once the step's metrics are logged

    def _steps(self, trainer: pl.Trainer) -> int | None:
        """``max_steps`` when the run is bounded by steps, else None (epoch bars)."""
        return trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None

    def _silent(self) -> Tqdm:
        return Tqdm(disable=True)

    def init_sanity_tqdm(self) -> Tqdm:
        """Lightning's bar on a terminal; nothing in a log."""
        return self._silent() if self.lines else super().init_sanity_tqdm()

    def init_validation_tqdm(self) -> Tqdm:
        """Lightning's bar on a terminal; nothing in a log."""
        return self._silent() if self.lines else super().init_validation_tqdm()

    def init_train_tqdm(self) -> Tqdm:
        """The step bar (``train``), Lightning's epoch bar without ``max_steps``."""
        if self.lines or self._trainer is None or self._steps(self.trainer) is None:
            return self._silent() if self.lines else super().init_train_tqdm()
        bar = super().init_train_tqdm()
        bar.set_description("train")
        return bar

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One bar from the current step (a resumed run) to ``max_steps``."""
        super().on_train_start(trainer, pl_module)
        self._start, self._first = time.time(), trainer.global_step
        self._shown = trainer.global_step
        total = self._steps(trainer)
        if total is not None and not self.lines:
            bar = self.train_progress_bar
            bar.reset(total=total)
            bar.initial = trainer.global_step  # a resumed run starts where it stopped
            bar.n = trainer.global_step
            bar.refresh()

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        """Keep the bar: an epoch is a pass over the data, not a unit of a run by steps."""
        if self._steps(trainer) is None and not self.lines:
            super().on_train_epoch_start(trainer, *args)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Advance by optimizer steps: a micro-batch of an accumulation does not move it."""
        total = self._steps(trainer)
        if total is None:
            if not self.lines:
                super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        step = trainer.global_step
        if step == self._shown:
            return
        self._shown = step
        if self.lines:
            every = self.line_every or max(1, total // 10)
            self._pending = step % every == 0 or step >= total
            return
        bar = self.train_progress_bar
        if step >= total or step % self.refresh_rate == 0:
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def _flush(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending and self.is_enabled:  # Lightning disables it on ranks > 0
            self._pending = False
            print(self.line(trainer, pl_module), flush=True)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Print the last step's line, now that its metrics are logged.

        A module logs in its own ``on_train_batch_end``, which Lightning calls after the
        callbacks' (GRPO does), so the line would otherwise show the step before's.
        """
        self._flush(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The step's line before the validation's output."""
        self._flush(trainer, pl_module)
        super().on_validation_start(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The last step's line."""
        self._flush(trainer, pl_module)
        super().on_train_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A line per epoch when training by epochs without a bar."""
        if self._steps(trainer) is None and self.lines and self.is_enabled:
            epoch = f"{trainer.current_epoch + 1}/{trainer.max_epochs}"
            print(f"epoch {epoch}, step {trainer.global_step}", flush=True)
        elif not self.lines:
            super().on_train_epoch_end(trainer, pl_module)

    def line(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        """``step k/N (p%), t s, ~r s left: metric=value, ...`` for the current step."""
        step, total = trainer.global_step, self._steps(trainer) or 0
        seconds = time.time() - self._start
        text = f"step {step}/{total} ({100 * step // max(total, 1)}%), {seconds:.0f} s"
        done = step - self._first
        if step < total and done > 0:
            text += f", ~{seconds / done * (total - step):.0f} s left"
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        if metrics:
            text += ": " + ", ".join(f"{k}={_text(v)}" for k, v in metrics.items())
        return text


def default_step_bar(trainer_config: Mapping[str, Any]) -> list[Callback]:
    """``[StepProgressBar()]`` for a trainer that shows a progress bar and names none, else ``[]``.

    For LightningCLI's trainer instantiation (``trainer_config``: the trainer's arguments,
    callbacks instantiated): Lightning refuses a bar callback with ``enable_progress_bar``
    false, and a second bar.
    """
    if trainer_config.get("enable_progress_bar") is False:
        return []
    named = trainer_config.get("callbacks") or []
    named = named if isinstance(named, list) else [named]
    return [] if any(isinstance(c, ProgressBar) for c in named) else [StepProgressBar()]
