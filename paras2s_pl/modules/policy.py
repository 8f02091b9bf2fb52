"""What every stage that trains the dual-stream policy shares: :class:`PolicyModule`.

:class:`~paras2s_pl.modules.sft.SFTModule` and :class:`~paras2s_pl.modules.grpo.GRPOModule`
subclass it. It owns

* **building the policy** in :meth:`PolicyModule.configure_model` (so FSDP can shard it as
  it is made): ``preset`` (``tiny`` or ``kimi_audio_7b``) + ``model_config`` overrides, or
  ``init_from`` a ``save_pretrained`` directory; the tiny preset's vocabulary sizes come from
  the DataModule (``text_vocab_size``, ``codec_vocab_size``) and every config is checked
  against the data at start-up (:func:`check_data_compatibility`);
* **exporting** it at the end of ``fit`` with ``save_pretrained`` (+ tokenizer and
  ``paras2s_policy.json``: codec class, vocabulary, sampling, stage, and whether the policy
  hears the query transcript, ``query_transcript`` + ``query_transcript_source``, which every
  later consumer reads: :mod:`paras2s_pl.models.speech_policy`) to ``export_dir`` or
  ``<log_dir>/policy``;
* **sharding** under FSDP2 (``ModelParallelStrategy``, what the paper-scale configs use:
  :mod:`paras2s_pl.modules.sharding`); Lightning's ``FSDPStrategy`` (FSDP1) is refused at
  start-up with the fix (the sharded paths are tested under FSDP2 only).

A subclass calls ``save_hyperparameters()`` with these arguments among its own: ``preset``,
``model_config``, ``init_from``, ``load_dtype``, ``text_vocab_size``, ``codec_vocab_size``,
``activation_checkpointing``, ``export``, ``export_dir``; and sets ``self.sampling`` and,
before the export, ``self.policy_query_transcript`` (bool) and
``self.query_transcript_source``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from lightning.pytorch import LightningModule

from paras2s_pl.models.dual_stream import DualStreamConfig, DualStreamLM
from paras2s_pl.models.sampling import SamplingConfig
from paras2s_pl.models.speech_policy import POLICY_INFO
from paras2s_pl.models.tokenizer import SPECIAL_TOKENS, special_ids
from paras2s_pl.modules.export import write_fit_metrics
from paras2s_pl.modules.optim import adamw_cosine
from paras2s_pl.modules.sharding import full_state_dict, refuse_fsdp1, shard_layers, uses_fsdp2

log = logging.getLogger(__name__)

PRESETS = {"tiny": DualStreamConfig.tiny, "kimi_audio_7b": DualStreamConfig.kimi_audio_7b}


def check_policy_args(preset: str, load_dtype: str) -> None:
    """Validate the shared constructor arguments (clear errors before anything is built)."""
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}; expected one of {list(PRESETS)}")
    if not isinstance(getattr(torch, load_dtype, None), torch.dtype):
        raise ValueError(f"load_dtype={load_dtype!r} is not a torch dtype (e.g. 'float32')")


class PolicyModule(LightningModule):
    """Base of the policy-training modules (see the module docstring)."""

    # no class-level ``model = None``: nn.Module keeps submodules out of the instance dict,
    # so a class attribute would shadow the registered model
    model: DualStreamLM | None
    tokenizer = None  # from the DataModule (decoding, export)
    codec = None  # from the DataModule (decoding generated audio)
    sampling: SamplingConfig | None = None
    policy_query_transcript: bool | None = None  # the prompt carries t_i; None = not known
    query_transcript_source: str | None = None  # "shard" (content) or "asr"
    _policy_cfg: DualStreamConfig | None = None

    # ---- model -------------------------------------------------------------------------------
    def _datamodule(self):
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def _data_size(self, name: str) -> int | None:
        """``text_vocab_size`` / ``codec_vocab_size``: the hparam, else the DataModule's."""
        given, dm = self.hparams[name], self._datamodule()
        data = getattr(dm, name, None) if dm is not None else None
        if given is not None and data is not None and given != data:
            raise ValueError(
                f"model.init_args.{name}={given} but the data has {name}={data}; "
                f"remove the model setting or make them agree"
            )
        return given if given is not None else data

    def policy_config(self) -> DualStreamConfig:
        """The policy's config, resolved from the preset/checkpoint and checked against the data."""
        if self.model is not None:
            return self.model.config
        if self._policy_cfg is None:
            hp = self.hparams
            overrides = dict(hp.model_config or {})
            text_size, codec_size = (
                self._data_size(n) for n in ("text_vocab_size", "codec_vocab_size")
            )
            if hp.init_from is not None:
                cfg = DualStreamConfig.from_pretrained(hp.init_from, **overrides)
            elif hp.preset == "tiny":
                if text_size is None or codec_size is None:
                    raise ValueError(
                        "SFTModule(preset='tiny') needs text_vocab_size and codec_vocab_size: "
                        "fit with an SFTDataModule or set model.init_args.text_vocab_size / "
                        "codec_vocab_size"
                    )
                cfg = DualStreamConfig.tiny(text_size, codec_size, **overrides)
            else:
                cfg = PRESETS[hp.preset](**overrides)
            check_data_compatibility(cfg, text_size, codec_size, self._data_tokenizer())
            # stored so load_from_checkpoint can rebuild the model without the data
            hp.text_vocab_size, hp.codec_vocab_size = text_size, codec_size
            self._policy_cfg = cfg
        return self._policy_cfg

    def _data_tokenizer(self):
        dm = self._datamodule()
        return getattr(dm, "tokenizer", None) if dm is not None else self.tokenizer

    def setup(self, stage: str) -> None:
        """Take the tokenizer and codec from the DataModule; resolve and check the config."""
        if self._trainer is not None:
            refuse_fsdp1(self.trainer.strategy)
        dm = self._datamodule()
        if dm is not None:
            self.tokenizer = getattr(dm, "tokenizer", self.tokenizer)
            self.codec = getattr(dm, "codec", self.codec)
        self.policy_config()

    def configure_model(self) -> None:
        """Build the policy (here, not in ``__init__``, so FSDP can shard it as it is made).

        Under ``ModelParallelStrategy`` (FSDP2) each decoder layer, then the root, is
        ``fully_shard``-ed over the data-parallel mesh (:mod:`paras2s_pl.modules.sharding`).
        """
        if self.model is not None:
            return
        self._build_policy()
        self._shard(self.model)

    def _shard(self, model: torch.nn.Module) -> None:
        """``fully_shard`` ``model`` per decoder layer under FSDP2; otherwise leave it."""
        if self._trainer is not None and uses_fsdp2(self.trainer.strategy):
            name = type(model).__name__  # before fully_shard renames the class
            units = shard_layers(model, self.device_mesh, precision=self.trainer.precision)
            log.info("FSDP2: %s sharded as %d decoder-layer units + root", name, units)

    def _build_policy(self) -> None:
        cfg, hp = self.policy_config(), self.hparams
        if hp.init_from is not None:
            dtype = getattr(torch, hp.load_dtype)
            # transformers loads in eval mode: train the policy in train mode (dropout)
            self.model = DualStreamLM.from_pretrained(hp.init_from, config=cfg, dtype=dtype).train()
        else:
            self.model = DualStreamLM(cfg)
        if hp.activation_checkpointing:
            self.model.gradient_checkpointing_enable({"use_reentrant": False})

    def configure_optimizers(self) -> dict:
        """AdamW over the policy only, linear warm-up, then cosine decay or a constant lr.

        ``hparams.lr_schedule`` picks it (default cosine); stepped per optimizer step.
        """
        hp = self.hparams
        return adamw_cosine(
            self.model.parameters(), self._trainer, hp.lr, hp.betas, hp.weight_decay,
            hp.warmup_steps, hp.max_steps, what="the policy",
            schedule=hp.get("lr_schedule", "cosine"),
        )  # fmt: skip

    # ---- export ------------------------------------------------------------------------------
    def on_fit_end(self) -> None:
        """Export the policy for the next stages (see :meth:`export_policy`)."""
        if not self.hparams.export:
            return
        root = self.trainer.log_dir or self.trainer.default_root_dir
        self.export_policy(self.hparams.export_dir or Path(root) / "policy")

    def export_policy(self, directory: str | Path) -> Path | None:
        """``save_pretrained`` the policy + tokenizer + ``paras2s_policy.json`` to ``directory``.

        Every rank must call it (under FSDP the full state dict is gathered to rank 0,
        which writes); returns the directory on the writing rank, else None.
        """
        directory = Path(directory)
        state = self._full_state_dict()  # collective under FSDP
        if self._trainer is not None and not self.trainer.is_global_zero:
            return None
        policy = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, state_dict=policy)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)
        info = {
            "codec": type(self.codec).__module__ + "." + type(self.codec).__qualname__
            if self.codec is not None
            else None,
            "codec_vocab_size": self.hparams.codec_vocab_size,
            "text_vocab_size": self.hparams.text_vocab_size,
            "sampling": asdict(self.sampling) if self.sampling is not None else None,
            "query_transcript": self.policy_query_transcript,
            "query_transcript_source": self.query_transcript_source,
            "stage": type(self).__name__,
            "global_step": self.global_step if self._trainer is not None else None,
        }
        (directory / POLICY_INFO).write_text(json.dumps(info, indent=2))
        write_fit_metrics(self._trainer, directory)
        log.info("exported the policy to %s", directory)
        return directory

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        """The LightningModule's unsharded state dict (under FSDP: gathered to rank 0, on CPU)."""
        strategy = self._trainer.strategy if self._trainer is not None else None
        if uses_fsdp2(strategy):
            state = full_state_dict(self.model)  # rank 0 only (the others: empty)
            return {f"model.{k}": v for k, v in state.items()}
        return self.state_dict()


def check_data_compatibility(
    cfg: DualStreamConfig,
    text_vocab_size: int | None,
    codec_vocab_size: int | None,
    tokenizer=None,
) -> None:
    """Raise ``ValueError`` naming both numbers when the data does not fit the policy config.

    The codec's vocabulary must equal the model's audio-code block (a smaller codec would
    train on a block whose codes mean something else), the tokenizer must fit the text ids,
    and a tokenizer holding the dual-stream control tokens must have them at the config's ids.
    """
    if codec_vocab_size is not None:
        cfg.check_codec(codec_vocab_size)
        if codec_vocab_size != cfg.audio_vocab_size:
            raise ValueError(
                f"codec vocabulary ({codec_vocab_size} codes) does not match the model's audio "
                f"code block (audio_vocab_size={cfg.audio_vocab_size}); use the codec the model "
                f"was built for or set model_config.audio_vocab_size={codec_vocab_size}"
            )
    if text_vocab_size is not None and text_vocab_size > cfg.text_vocab_size:
        raise ValueError(
            f"tokenizer has {text_vocab_size} ids but the model's text ids are "
            f"[0, text_vocab_size={cfg.text_vocab_size}); use the model's tokenizer"
        )
    if tokenizer is None:
        return
    try:
        found = special_ids(tokenizer)
    except ValueError:
        log.warning("tokenizer has no %s...: control ids not checked", SPECIAL_TOKENS[0])
        return
    wrong = {k: (v, getattr(cfg, k)) for k, v in found.items() if getattr(cfg, k) != v}
    if wrong:
        detail = ", ".join(f"{k}: tokenizer {a} vs model {b}" for k, (a, b) in wrong.items())
        raise ValueError(f"control-token ids differ between tokenizer and model ({detail})")
