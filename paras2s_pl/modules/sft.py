"""Supervised fine-tuning of the dual-stream policy (paper §4.1, eq. 2): ``SFTModule``.

Run it with a config (mini world on CPU, or paper scale on 8 GPUs with FSDP)::

    paras2s fit --config configs/mini/sft.yaml
    paras2s fit --config configs/sft.yaml
    paras2s test --config configs/mini/sft.yaml --model.init_args.init_from runs/mini/sft_policy

**Model.** :meth:`SFTModule.configure_model` builds the
:class:`~paras2s_pl.models.dual_stream.DualStreamLM` (so FSDP can wrap it as it is made):
``preset`` (``tiny`` or ``kimi_audio_7b``) + ``model_config`` overrides, or ``init_from`` a
``save_pretrained`` directory (a converted Kimi-Audio checkpoint, or an earlier export).
The vocabulary sizes of the tiny preset come from the data (``len(tokenizer)``, the
codec's ``vocab_size``; :meth:`SFTModule.policy_config`); every preset is checked against
the data at start-up: a codec whose vocabulary differs from the model's audio-code block,
a tokenizer larger than the text ids, or control tokens at other ids raise a
``ValueError`` naming both numbers. The same config lays out the data
(:meth:`paras2s_pl.data.sft.SFTDataModule.layout_config` asks for it).

**Loss.** :func:`paras2s_pl.losses.sft.sft_loss`: next-token CE of the text head on the text
stream plus the audio head on the audio stream, each a masked mean (weights
``text_weight``/``audio_weight``). Logged: ``train/loss``, ``train/loss_text``,
``train/loss_audio``, ``train/acc_text``, ``train/acc_audio``, ``train/lr``; ``val/…`` the
same per epoch. The validation loss of the untrained model (the sanity check, run over the
whole validation set with ``num_sanity_val_steps: -1``) is logged as ``val/loss`` at step 0,
so the curve shows where training started. ``paras2s test`` logs the same losses and
accuracies as ``test/*`` on the whole test split (``--ckpt_path`` a checkpoint, or
``init_from`` an export).

**Validation generations.** In the first validation batch (inside ``validation_step``, so
under FSDP the root parameters are gathered and each wrapped decoder layer gathers itself)
every rank greedily generates responses for the first ``val_generate`` validation queries;
``val/gen_text_exact`` (generated text == reference), ``val/gen_finished`` (audio end token
reached) and ``val/gen_audio_codes`` are logged, and on rank 0 the codec decodes the audio
(with the generated text) and the audio plus a text table (query, reference, generation)
go to TensorBoard (skipped quietly for other loggers). With several ranks every rank runs the
same greedy decoding on the same prompts, so all take the same number of steps.

**Optimisation.** AdamW, linear warm-up then cosine decay to 0 over ``max_steps`` (default:
the trainer's ``estimated_stepping_batches``), stepped per optimizer step. Gradient
clipping, precision and FSDP come from the trainer config (``configs/sft.yaml``).
``activation_checkpointing`` uses the HF flag (``gradient_checkpointing_enable``); under
FSDP prefer the strategy's ``activation_checkpointing_policy`` on the decoder layer class
(:data:`~paras2s_pl.models.dual_stream.DECODER_LAYER_CLASS`); use one, not both.

**Export.** At the end of ``fit`` the policy is written with ``save_pretrained`` to
``export_dir`` (the configs: ``runs/[mini/]sft_policy``; unset: ``<log_dir>/policy``) with
the tokenizer and ``paras2s_policy.json`` (codec class and vocabulary); later stages load it
with ``init_from``/``from_pretrained``. The JSON also records ``query_transcript``: whether the
policy hears the query transcript ``t_i`` under the query audio (paper eq. 2), which this stage
decides through ``data.init_args.query_transcript`` (on by default; its transcripts are the
demos' ``content``, so ``query_transcript_source: shard``) and every later consumer honours
(:mod:`paras2s_pl.models.speech_policy`). Continuing from an export recorded the other way is
allowed (an ablation) with a one-line warning.
"""

from __future__ import annotations

import html
import logging
from typing import Any, Literal

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics import MeanMetric

from paras2s_pl.losses.sft import sft_loss
from paras2s_pl.models.dual_stream import DualStreamConfig, DualStreamLM
from paras2s_pl.models.layout import IGNORE_INDEX
from paras2s_pl.models.sampling import (
    SamplingConfig,
    all_ranks_done,
    generate,
    response_codes,
    response_text_ids,
)
from paras2s_pl.models.speech_policy import recorded_query_transcript
from paras2s_pl.modules.policy import (  # noqa: F401  (check_data_compatibility: re-export)
    PolicyModule,
    check_data_compatibility,
    check_policy_args,
)

log = logging.getLogger(__name__)

LOGGED_STATS = ("loss", "loss_text", "loss_audio", "acc_text", "acc_audio")
#: Validation decoding: greedy on both streams (overridable through ``sampling``).
VAL_SAMPLING = {"audio_temperature": 0.0, "text_temperature": 0.0, "max_new_tokens": 256}


class SFTModule(PolicyModule):
    """SFT of the dual-stream policy (see the module docstring).

    Args:
        preset: Architecture: ``tiny`` (mini world; vocabulary sizes from the data) or
            ``kimi_audio_7b`` (Kimi-Audio-7B's; fixed ids). Ignored with ``init_from``.
        model_config: Overrides of the preset's :class:`DualStreamConfig` fields (with
            ``init_from``: of the checkpoint's config).
        init_from: A ``save_pretrained`` directory to start from (converted Kimi-Audio
            checkpoint: ``python -m paras2s_pl.models.kimi_checkpoint --convert-kimi SRC DST``,
            or an earlier stage's ``policy`` export). None = random initialisation.
        load_dtype: Dtype the ``init_from`` weights load in; keep float32 master weights
            with ``bf16-mixed`` (bf16 weights would swallow lr-1e-5 updates).
        text_vocab_size: Text ids of the tiny preset; None = ``len(tokenizer)`` of the
            DataModule (stored in the checkpoint's hyperparameters once resolved).
        codec_vocab_size: Codec codes; None = the DataModule codec's ``vocab_size``.
        lr: Peak learning rate (paper A.4: 1e-5).
        weight_decay: AdamW weight decay (the paper does not give one).
        betas: AdamW betas.
        warmup_steps: Linear warm-up steps.
        max_steps: Length of the cosine schedule; None = ``trainer.estimated_stepping_batches``.
        text_weight: Weight of the text-stream loss.
        audio_weight: Weight of the audio-stream loss.
        val_generate: Validation queries to generate a response for each validation (0 = off).
        sampling: :class:`~paras2s_pl.models.sampling.SamplingConfig` fields of the validation
            generations, over the greedy defaults :data:`VAL_SAMPLING`.
        activation_checkpointing: Recompute decoder-layer activations in backward (HF flag).
        export: Write the policy with ``save_pretrained`` at the end of ``fit``.
        export_dir: Where to export; None = ``<log_dir>/policy``.
    """

    def __init__(
        self,
        preset: Literal["tiny", "kimi_audio_7b"] = "tiny",
        model_config: dict[str, Any] | None = None,
        init_from: str | None = None,
        load_dtype: str = "float32",
        text_vocab_size: int | None = None,
        codec_vocab_size: int | None = None,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        max_steps: int | None = None,
        text_weight: float = 1.0,
        audio_weight: float = 1.0,
        val_generate: int = 4,
        sampling: dict[str, Any] | None = None,
        activation_checkpointing: bool = False,
        export: bool = True,
        export_dir: str | None = None,
    ) -> None:
        super().__init__()
        check_policy_args(preset, load_dtype)
        self.save_hyperparameters()
        self.sampling = SamplingConfig(**{**VAL_SAMPLING, **(sampling or {})})
        self.model: DualStreamLM | None = None
        self.tokenizer = None  # from the DataModule (decoding generations, export)
        self.codec = None  # from the DataModule (decoding generated audio)
        self._policy_cfg: DualStreamConfig | None = None
        self._val_loss = MeanMetric()
        self._generations: list[dict[str, Any]] = []

    def setup(self, stage: str) -> None:
        """As :meth:`PolicyModule.setup`, and take the query-transcript setting from the data."""
        super().setup(stage)
        dm = self._datamodule()
        hears = getattr(dm, "query_transcript", None) if dm is not None else None
        if hears is None:
            return
        self.policy_query_transcript, self.query_transcript_source = bool(hears), "shard"
        start = self.hparams.init_from
        recorded = recorded_query_transcript(start) if start is not None else None
        if recorded is not None and recorded != hears:
            log.warning(
                "init_from %s was trained with query_transcript=%s, this run's data has "
                "query_transcript=%s (data.init_args.query_transcript): its prompts change",
                start, recorded, bool(hears),
            )  # fmt: skip

    # ---- steps -------------------------------------------------------------------------------
    def _loss(
        self, batch: dict[str, Any], global_mean: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.model(
            batch["audio_ids"], batch["text_ids"], attention_mask=batch["attention_mask"]
        )
        return sft_loss(
            out.text_logits,
            out.audio_logits,
            batch["text_labels"],
            batch["audio_labels"],
            self.hparams.text_weight,
            self.hparams.audio_weight,
            denominators=self._rank_token_counts(batch) if global_mean else None,
        )

    def _rank_token_counts(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Each stream's labelled tokens over all ranks / ranks (None on one process).

        Data-parallel strategies average the ranks' gradients; dividing each rank's summed
        loss by this makes that average the gradient of the mean over every rank's tokens,
        as one process with the global batch computes it (not a mean of per-rank means).
        """
        world = self.trainer.world_size if self._trainer is not None else 1
        if world == 1 or not torch.distributed.is_initialized():
            return None
        counts = torch.stack(
            [(batch[k][:, 1:] != IGNORE_INDEX).sum() for k in ("text_labels", "audio_labels")]
        ).to(torch.float64)
        torch.distributed.all_reduce(counts)
        text, audio = (counts / world).float().unbind()
        return text, audio

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Both streams' next-token loss on one batch; logs ``train/*``.

        With several ranks the loss is normalised by the global token counts
        (:meth:`_rank_token_counts`), so 2 ranks x batch b train as 1 rank x batch 2b.
        """
        loss, stats = self._loss(batch, global_mean=True)
        size = batch["audio_ids"].shape[0]
        for name in LOGGED_STATS:
            self.log(f"train/{name}", stats[name], batch_size=size, prog_bar=name == "loss")
        if self._trainer is not None and self.trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Validation loss; the first batch also runs the validation generations."""
        loss, stats = self._loss(batch)
        size = batch["audio_ids"].shape[0]
        for name in LOGGED_STATS:
            self.log(f"val/{name}", stats[name], batch_size=size, sync_dist=True)
        self._val_loss.update(stats["loss"], size)
        sanity = self._trainer is not None and self.trainer.sanity_checking
        if batch_idx == 0 and not sanity and self.hparams.val_generate > 0:
            self._generations = self._validation_generations()
        return loss

    def on_validation_epoch_end(self) -> None:
        """Log the sanity-check loss at step 0 and the generations to TensorBoard."""
        value = self._val_loss.compute()
        self._val_loss.reset()
        if self.trainer.sanity_checking:
            if self.logger is not None and self.trainer.is_global_zero:
                self.logger.log_metrics({"val/loss": float(value)}, step=self.global_step)
            log.info("validation loss before training: %.4f", float(value))
            return
        if self._generations and self.trainer.is_global_zero:
            self._log_generations(self._generations)
        self._generations = []

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """``paras2s test``: held-out loss and accuracy per stream, as ``test/*``."""
        loss, stats = self._loss(batch)
        size = batch["audio_ids"].shape[0]
        for name in LOGGED_STATS:
            self.log(f"test/{name}", stats[name], batch_size=size, sync_dist=True)
        return loss

    # ---- generation --------------------------------------------------------------------------
    @torch.no_grad()
    def respond(
        self,
        prompts: dict[str, torch.Tensor],
        sampling: SamplingConfig | None = None,
        seed: int = 0,
    ) -> list[dict[str, Any]]:
        """Generate responses for left-padded prompts (``SFTDataModule.prompt_batch``).

        Returns per row: ``text`` (decoded with the tokenizer; None without one),
        ``text_ids``, ``codes`` (codec codes, CPU) and ``finished`` (audio end reached).
        """
        cfg = self.model.config
        ids = {k: prompts[k].to(self.device) for k in ("audio_ids", "text_ids", "attention_mask")}
        generator = torch.Generator(device=self.device).manual_seed(seed)
        rollout = generate(
            self.model,
            ids["audio_ids"],
            ids["text_ids"],
            ids["attention_mask"],
            sampling or self.sampling,
            generator,
            all_done=all_ranks_done,  # sharded (FSDP) ranks step together
        )
        text_ids = response_text_ids(rollout, cfg)
        codes = response_codes(rollout, cfg)
        texts = (
            self.tokenizer.batch_decode(text_ids, skip_special_tokens=True)
            if self.tokenizer is not None
            else [None] * len(text_ids)
        )
        return [
            {"text": t, "text_ids": i, "codes": c, "finished": bool(f)}
            for t, i, c, f in zip(texts, text_ids, codes, rollout.finished.tolist(), strict=True)
        ]

    def _validation_generations(self) -> list[dict[str, Any]]:
        dm = self._datamodule()
        queries = list(getattr(dm, "val_queries", []))[: self.hparams.val_generate]
        if not queries:
            return []
        rows = self.respond(dm.prompt_batch(queries))
        for row, query in zip(rows, queries, strict=True):
            row.update(
                key=query.key,
                category=query.category,
                style=query.style,
                content=query.content,
                reference=query.response_text,
            )
        n = len(rows)
        exact = sum((r["text"] or "").strip() == r["reference"].strip() for r in rows) / n
        finished = sum(r["finished"] for r in rows) / n
        codes = sum(len(r["codes"]) for r in rows) / n
        for name, value in (("text_exact", exact), ("finished", finished), ("audio_codes", codes)):
            self.log(f"val/gen_{name}", value, batch_size=n, sync_dist=True)
        return rows

    def _log_generations(self, rows: list[dict[str, Any]]) -> None:
        if not isinstance(self.logger, TensorBoardLogger):
            return
        writer, step = self.logger.experiment, self.global_step
        lines = ["| key | style | query | reference | generated |", "|---|---|---|---|---|"]
        for i, row in enumerate(rows):
            cells = [row["key"], f"{row['category']}/{row['style']}", row["content"],
                     row["reference"], row["text"] or ""]  # fmt: skip
            lines.append("| " + " | ".join(html.escape(c).replace("|", "/") for c in cells) + " |")
            if self.codec is not None and len(row["codes"]):
                try:
                    wav, sr = self.codec.decode(row["codes"], row["text"])
                except Exception as err:  # a decoder failure must not stop training
                    log.warning("could not decode the generated audio of %s: %s", row["key"], err)
                    continue
                wav = torch.as_tensor(wav, dtype=torch.float32).clamp(-1, 1).reshape(1, -1)
                writer.add_audio(f"val/audio/{i}_{row['key']}", wav, step, sample_rate=sr)
        writer.add_text("val/generations", "\n".join(lines), step)

    # ---- optimisation ------------------------------------------------------------------------
