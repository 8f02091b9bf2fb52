"""The Lightning subcommands of ``paras2s``: ``fit``, ``validate``, ``test``, ``predict``.

LightningCLI in subclass mode: the YAML picks the LightningModule and DataModule by
``class_path``; configs are read in omegaconf mode so they can interpolate::

    paras2s fit --config configs/mini/sft.yaml
    paras2s test --config configs/mini/reward.yaml \
        --ckpt_path runs/reward/version_0/checkpoints/last.ckpt

A stage that has no loop for the command (GRPO has no validation or test loop; no stage
predicts through Lightning) stops before the trainer starts with one line saying what to
run instead (:class:`UnsupportedCommandError`), not a Lightning traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.model_helpers import is_overridden

from paras2s_pl.commands.parsing import ReadableHelpFormatter

log = logging.getLogger(__name__)

#: Shown under every Lightning command's --help (and in ``paras2s --help``).
CONFIGS_HELP = (
    "Configs: configs/<stage>.yaml (paper scale, GPUs) and configs/mini/<stage>.yaml (the "
    "mini world on CPU), stage = sft, reward or grpo, e.g. `paras2s fit --config "
    "configs/mini/sft.yaml`; configs/README.md lists them with their exports."
)
TEST_HELP = (
    "test: held-out metrics of SFT (the data's test split) and of the reward model (its "
    "held-out pairs, or data.init_args.test_split); give the trained weights with "
    "--ckpt_path runs/<stage>/version_N/checkpoints/last.ckpt (SFT: or "
    "--model.init_args.init_from runs/mini/sft_policy)."
)
#: Command → (the LightningModule hook, the DataModule hook) it needs.
LOOPS = {
    "validate": ("validation_step", "val_dataloader"),
    "test": ("test_step", "test_dataloader"),
    "predict": ("predict_step", "predict_dataloader"),
}
#: What to run instead when a stage has no loop for the command.
INSTEAD = {
    "validate": "a GRPO policy is measured on the bench: `paras2s bench respond --system grpo "
    "--policy runs/mini/grpo_policy --testset shards/demo`, then `paras2s bench run` "
    "(paras2s_pl/bench/README.md)",
    "test": "a GRPO policy is measured on the bench: `paras2s bench respond --system grpo "
    "--policy runs/mini/grpo_policy --testset shards/demo`, then `paras2s bench run` "
    "(paras2s_pl/bench/README.md)",
    "predict": "a trained policy's responses come from `paras2s bench respond --system NAME "
    "--policy DIR --testset SHARDS`; the reward model's held-out metrics from `paras2s test "
    "--config configs/mini/reward.yaml --ckpt_path CKPT`",
}


class UnsupportedCommandError(Exception):
    """The config's stage has no loop for this Lightning command (the message says what to run)."""


class StageCLI(LightningCLI):
    """LightningCLI whose validate/test/predict check the stage has that loop before running."""

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        """Show training progress as ``step k/max_steps`` unless bars are off or one is named.

        A default here, not in the configs: a bar in ``trainer.callbacks`` would make Lightning
        refuse ``--trainer.enable_progress_bar false``.
        """
        from paras2s_pl.callbacks import default_step_bar

        return super()._instantiate_trainer(config, [*callbacks, *default_step_bar(config)])

    def before_validate(self) -> None:
        """Refuse in one line when the stage has no validation loop."""
        self._check_loop("validate")

    def before_test(self) -> None:
        """Refuse in one line when the stage has no test loop; warn on untrained weights."""
        self._check_loop("test")
        no_checkpoint = self.config["test"].get("ckpt_path") is None
        if no_checkpoint and not self.model.hparams.get("init_from"):
            log.warning(
                "paras2s test without --ckpt_path: testing the weights the config builds "
                "(untrained unless it loads some)"
            )

    def before_predict(self) -> None:
        """Refuse in one line when the stage has no predict loop."""
        self._check_loop("predict")

    def _check_loop(self, command: str) -> None:
        step, loader = LOOPS[command]
        missing = None
        if not is_overridden(step, self.model, LightningModule):
            missing = f"{type(self.model).__name__} has no {step}()"
        elif self.datamodule is not None and not is_overridden(
            loader, self.datamodule, LightningDataModule
        ):
            missing = f"{type(self.datamodule).__name__} has no {loader}()"
        if missing is not None:
            raise UnsupportedCommandError(
                f"this stage has no {command} loop ({missing}); {INSTEAD[command]}"
            )


def lightning_cli(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Build the LightningCLI (subclass mode, omegaconf parser) on ``args``."""
    per_command: dict[str, Any] = {
        name: {"epilog": CONFIGS_HELP, "formatter_class": ReadableHelpFormatter}
        for name in LOOPS.keys() | {"fit"}
    }
    per_command["test"]["epilog"] = f"{CONFIGS_HELP} {TEST_HELP}"
    return StageCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={
            "parser_mode": "omegaconf",
            "formatter_class": ReadableHelpFormatter,
            "epilog": CONFIGS_HELP,
            **per_command,
        },
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )
