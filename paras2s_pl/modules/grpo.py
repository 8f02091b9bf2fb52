r"""GRPO with online rollouts for the dual-stream policy (paper §4.3, eq. 3–4): ``GRPOModule``.

Run it (the user's main command; mini world on CPU, or paper scale on 8 GPUs with FSDP)::

    paras2s fit --config configs/mini/grpo.yaml
    paras2s fit --config configs/grpo.yaml

It needs the SFT policy (``init_from``, from ``paras2s fit --config configs/mini/sft.yaml``)
and a reward (``scorer``: the reward model of ``paras2s fit --config configs/mini/reward.yaml``,
or the judge pipeline directly); a missing one stops the run at start-up with the command
that makes it.

**One rollout, then its updates** (automatic optimisation with a rollout buffer).
:class:`~paras2s_pl.data.prompts.PromptDataModule` yields one item per training step; the
first step of each rollout (``phase == 0``) runs, inside ``training_step``, the rollout
of :class:`~paras2s_pl.modules.grpo_rollout.GRPORollout` (a mixin of this module):

1. *transcripts* of the B prompts: the shard's ``content`` (``query_transcript: shard``) or
   the ASR backend's (``asr``; the paper's: Whisper-v3 on the unlabeled prompts, §4.3),
   cached per prompt; the scorer gets them, and so does the policy when it hears ``t_i``;
2. *rollout*: G responses per prompt from the policy (eval mode, KV cache, no grad,
   ``sampling``), seeded per response by (``seed``, rollout, prompt slot, g); the prompt carries the
   transcript under the query audio when the policy was trained with it
   (``policy_query_transcript``, by default the ``init_from`` export's ``query_transcript``:
   :mod:`paras2s_pl.models.speech_policy`), and the export records the same;
3. *decode*: the text stream is detokenized; when the scorer listens, the codec turns the
   codes (+ text) into audio (a failure gives that response a NaN reward, counted);
4. *score*: ``scorer(prompts, transcripts, responses)`` → (B·G,) rewards (frozen, no grad);
5. *log-probs* without grad: the frozen reference's (β > 0) and, with ``num_iterations`` > 1,
   the sampling policy's (π_old), on exactly the sampled streams;
6. *advantages* ``(r − mean_g)/(std_g + eps)`` per prompt group
   (:func:`paras2s_pl.losses.grpo.group_advantages`: non-finite rewards dropped and counted,
   all-equal groups give 0 and are counted).

The rollout is kept in a :class:`~paras2s_pl.rl.buffer.RolloutBuffer` split into
``trainer.accumulate_grad_batches`` micro-batches (whole responses); each training step
recomputes the policy's log-probs **with gradients** on its micro-batch and returns
:func:`~paras2s_pl.losses.grpo.dual_stream_grpo_loss` (clipped ratio, k3 KL to the reference,
both streams under their masks, mean per response then over the rollout; the full rollout's
denominator is used so the accumulated gradient is the rollout's). Lightning accumulates and
steps the optimizer once per pass over the buffer; ``num_iterations`` μ passes make μ
optimizer steps per rollout (so ``trainer.max_steps`` = rollouts × μ). With μ = 1 the ratio
is exactly 1 (``old = logp.detach()``): the loss value is ≈ 0 while its gradient is the
policy gradient; watch ``train/reward`` and ``train/kl``, not ``train/loss``.

Why not manual optimisation (as the issue first said): Lightning's FSDP strategy does not
support it (Lightning issues #19685, #19626, #20138); with the buffer the rollout still lives
in ``training_step`` and the optimisation is Lightning's own (accumulation, clipping,
precision, schedulers, checkpoints).

**Frozen models.** The reference policy (β > 0) is loaded from ``init_from`` (or copied
from the initial weights), ``requires_grad=False``, eval mode, kept out of the module's
children (so out of the optimizer, the state dict and FSDP's wrapping) and placed on
``reference_device`` (default: the policy's; ``cpu`` offloads it, at the price of moving
each micro-batch there). Under FSDP2 it is sharded like the policy unless
``shard_reference: false`` (then a full replica per rank). The scorer is not a module
either; a reward model may sit on its own device (``scorer.init_args.device``) and scores
only its own rank's responses.

**Logged** (TensorBoard; names as TRL's), once per optimizer step: ``train/reward``,
``train/reward_std``, ``train/reward/<category>`` (labelled prompts), ``train/advantage_std``,
``train/frac_reward_zero_std``, ``train/num_nonfinite_rewards``, ``train/kl`` (+ ``/text``,
``/audio``), ``train/clip_ratio/{low,high,region}_mean``, ``train/entropy/{text,audio}``,
``train/completions/mean_length`` (positions), ``…/mean_text_tokens``,
``…/mean_audio_tokens``, ``…/mean_seconds`` (decoded audio), ``…/clipped_ratio``
(truncated by ``max_new_tokens``), ``…/decode_errors``, ``train/loss``,
``train/policy_loss``, ``train/grad_norm``, ``train/lr``, ``train/time/{rollout,decode,score,
logprobs,update}`` and ``train/step_time`` (seconds per optimizer step). Every
``log_examples_every_n_rollouts`` rollouts, ``num_log_examples`` (prompt audio, response
audio, transcript, response text, reward) go to TensorBoard as audio + a text table.

**Resume.** ``paras2s fit --config … --ckpt_path last`` continues bit-identically on CPU:
Lightning restores weights, optimizer, scheduler and step; this module stores the number of
finished training steps (the data position: the schedule is a pure function of it), an
unfinished buffer (mid-rollout checkpoints with μ > 1) and, for a randomly initialised
policy, the reference weights. Sampling needs no RNG state: each rollout seeds its own
generator.

**FSDP2.** ``configs/grpo.yaml``: :class:`~paras2s_pl.modules.sharding.FSDP2Strategy`;
:meth:`configure_model` shards the policy and (``shard_reference``, default) the frozen
reference per decoder layer (:mod:`paras2s_pl.modules.sharding`). Generation runs inside
``training_step``: every call of the policy gathers each layer's shards, once per generated
position. Ranks finish sampling at different steps, so every step all-reduces a "done" flag
(MIN) and a finished rank keeps stepping until all are done — otherwise the collectives hang
(``tests/test_multiprocess.py`` forces one rank to end at once and the other at the length
limit). Each rank samples and scores only its own prompts, so a group of G never straddles
ranks; each response is seeded by its prompt's slot over all ranks, so 2 ranks sample the
responses 1 rank with the global batch samples (and train to the same weights).
"""

from __future__ import annotations

import copy
import html
import logging
import math
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from paras2s_pl.errors import MissingInputError
from paras2s_pl.losses.grpo import StreamTensors, dual_stream_grpo_loss, entropy_from_logits
from paras2s_pl.models.dual_stream import DualStreamLM
from paras2s_pl.models.sampling import GREEDY_TEMPERATURE, SamplingConfig, legal_ids_mask
from paras2s_pl.models.speech_policy import resolve_query_transcript
from paras2s_pl.modules.grpo_rollout import ROLLOUT_SAMPLING, SCORE_RATE, GRPORollout
from paras2s_pl.modules.policy import PolicyModule, check_policy_args
from paras2s_pl.modules.sharding import local_value, uses_fsdp2
from paras2s_pl.rl.buffer import RolloutBuffer
from paras2s_pl.rl.scorers import RewardModelScorer, Scorer

log = logging.getLogger(__name__)

__all__ = ["ROLLOUT_SAMPLING", "SCORE_RATE", "GRPOModule"]


class GRPOModule(GRPORollout, PolicyModule):
    """GRPO of the dual-stream policy with online rollouts (see the module docstring).

    Args:
        init_from: The SFT policy export to start from (``runs/mini/sft_policy`` in the mini
            config); also the reference policy. None = a random ``preset`` (tests only).
        preset: Architecture without ``init_from`` (``tiny`` | ``kimi_audio_7b``).
        model_config: :class:`~paras2s_pl.models.dual_stream.DualStreamConfig` overrides.
        load_dtype: Dtype the ``init_from`` weights (policy and reference) load in.
        text_vocab_size: Text ids of a random tiny preset (None = from the data).
        codec_vocab_size: Codec codes of a random tiny preset (None = from the data).
        scorer: The reward (:mod:`paras2s_pl.rl.scorers`); None = ``RewardModelScorer()``
            (``runs/mini/reward_model``).
        group_size: G, responses sampled per prompt (paper 8).
        num_iterations: μ, optimizer steps per rollout (1 = on-policy).
        beta: KL weight β on text tokens (paper 0.2; 0 = no reference model).
        beta_audio: KL weight on audio tokens; None = ``beta``.
        clip_eps: Lower clip ε of the ratio (paper 0.2).
        clip_eps_high: Upper clip; None = ``clip_eps``.
        aggregation: Token aggregation: ``grpo`` (paper, per-response mean), ``dapo``,
            ``dr_grpo``.
        combine: ``tokens`` (each stream's token is a term) or ``positions`` (joint ratio of
            the (audio, text) pair at each position, eq. 3 literally).
        scale_rewards: Advantage scaling: ``group`` (paper), ``batch`` (this rank's rollout)
            or ``none``.
        advantage_eps: Added to the std.
        streams: Streams that carry the loss: ``both`` (paper), ``text`` or ``audio``.
        sampling: :class:`~paras2s_pl.models.sampling.SamplingConfig` fields over
            :data:`ROLLOUT_SAMPLING`.
        query_transcript: Where the prompt transcript comes from: ``shard`` (``content``)
            or ``asr`` (the paper's way on unlabeled speech; at paper scale, ``whisper``).
            The mini config keeps ``shard``: the mini recogniser misses about half the words
            of a styled query (README), where Whisper-v3 on clean TTS speech is near exact.
        asr: ASR backend name (:mod:`paras2s_pl.bench.backends`) for ``asr`` transcripts and
            ``response_transcript: asr``.
        asr_options: Its constructor arguments.
        response_transcript: The response text the scorer gets: the policy's own text stream
            (``policy``) or the ASR of the decoded audio (``asr``).
        policy_query_transcript: Write the query transcript on the policy's text stream;
            None = as the ``init_from`` export records (off for an export without the
            record, or without ``init_from``). A value that contradicts the record warns.
        reference_device: Device of the reference model; None = the policy's, ``cpu`` offloads.
        shard_reference: Under FSDP2 (``ModelParallelStrategy``), shard the reference like the
            policy (per decoder layer over the ranks; default). False: a full replica per rank
            on ``reference_device`` (no gathers in its forward, the whole model's memory).
        lr: Peak learning rate. The paper's A.4 gives 5e-4 for RL (and 1e-6 for the reward
            model; the two look swapped against common practice: kept as published).
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: Linear warm-up optimizer steps.
        max_steps: Cosine schedule length; None = ``trainer.max_steps``.
        lr_schedule: ``cosine`` (decay to 0 at ``max_steps``) or ``constant`` after warm-up.
            A short run is better served by ``constant``: cosine over 20 steps spends its last
            quarter under 15 % of the peak (measured: the mini run barely moved).
        log_entropy: Log each stream's entropy (one extra softmax over the micro-batch).
        log_examples_every_n_rollouts: TensorBoard audio/text examples period (0 = off).
        num_log_examples: Examples each time.
        seed: Seed of the rollouts' sampling.
        activation_checkpointing: HF gradient checkpointing on the policy.
        export: Write the policy with ``save_pretrained`` at the end of ``fit``.
        export_dir: Where; None = ``<log_dir>/policy``.
    """

    def __init__(
        self,
        init_from: str | None = "runs/mini/sft_policy",
        preset: Literal["tiny", "kimi_audio_7b"] = "tiny",
        model_config: dict[str, Any] | None = None,
        load_dtype: str = "float32",
        text_vocab_size: int | None = None,
        codec_vocab_size: int | None = None,
        scorer: Scorer | None = None,
        group_size: int = 8,
        num_iterations: int = 1,
        beta: float = 0.2,
        beta_audio: float | None = None,
        clip_eps: float = 0.2,
        clip_eps_high: float | None = None,
        aggregation: Literal["grpo", "dapo", "dr_grpo"] = "grpo",
        combine: Literal["tokens", "positions"] = "tokens",
        scale_rewards: Literal["group", "batch", "none"] = "group",
        advantage_eps: float = 1e-4,
        streams: Literal["both", "text", "audio"] = "both",
        sampling: dict[str, Any] | None = None,
        query_transcript: Literal["shard", "asr"] = "shard",
        asr: str | None = None,
        asr_options: dict[str, Any] | None = None,
        response_transcript: Literal["policy", "asr"] = "policy",
        policy_query_transcript: bool | None = None,
        reference_device: str | None = None,
        shard_reference: bool = True,
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        max_steps: int | None = None,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        log_entropy: bool = True,
        log_examples_every_n_rollouts: int = 20,
        num_log_examples: int = 2,
        seed: int = 0,
        activation_checkpointing: bool = False,
        export: bool = True,
        export_dir: str | None = None,
    ) -> None:
        super().__init__()
        check_policy_args(preset, load_dtype)
        if group_size < 2:
            raise ValueError(f"group_size={group_size}: GRPO needs >= 2 responses per prompt")
        if num_iterations < 1:
            raise ValueError(f"num_iterations={num_iterations} must be >= 1")
        if lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule={lr_schedule!r}; expected 'cosine' or 'constant'")
        if streams not in ("both", "text", "audio"):
            raise ValueError(f"streams={streams!r}; expected 'both', 'text' or 'audio'")
        if "asr" in (query_transcript, response_transcript) and not asr:
            raise ValueError(
                "query_transcript or response_transcript is 'asr' but model.init_args.asr is "
                "not set; name a backend (e.g. asr: pocketsphinx) or use 'shard'/'policy'"
            )
        self.save_hyperparameters(ignore=["scorer"])
        self.scorer = scorer if scorer is not None else RewardModelScorer()
        self.sampling = SamplingConfig(**{**ROLLOUT_SAMPLING, **(sampling or {})})
        self.model = None
        self._policy_cfg = None
        self.tokenizer = self.codec = None
        # frozen helpers live in a plain dict: not children, so not trained, saved or wrapped
        self._frozen: dict[str, Any] = {"reference": None, "asr": None}
        self.consumed_steps = 0  # finished training steps = the data position
        self._buffer: RolloutBuffer | None = None
        self._transcripts: dict[str, str] = {}
        self._pass_stats: dict[str, list[float]] = defaultdict(list)
        self._rollout_log: dict[str, float] = {}
        self._times: Counter = Counter()
        self._batch_start = 0.0

    # ---- schedule ----------------------------------------------------------------------------
    @property
    def micro_batches(self) -> int:
        """Micro-batches per pass over a rollout = ``trainer.accumulate_grad_batches``."""
        return int(self.trainer.accumulate_grad_batches) if self._trainer is not None else 1

    @property
    def steps_per_rollout(self) -> int:
        """Training steps per rollout: micro-batches × ``num_iterations``."""
        return self.micro_batches * self.hparams.num_iterations

    # ---- set-up ------------------------------------------------------------------------------
    def check_inputs(self) -> None:
        """The SFT policy and the scorer's inputs exist, else name the commands that make them.

        Called by :class:`~paras2s_pl.data.prompts.PromptDataModule` before it encodes the
        prompts, and again in :meth:`setup`.
        """
        hp = self.hparams
        if hp.init_from is not None and not (Path(hp.init_from) / "config.json").exists():
            raise MissingInputError(
                f"model.init_args.init_from={hp.init_from!r}: no policy there (config.json "
                "missing). Produce it with `paras2s fit --config configs/mini/sft.yaml` "
                "(mini world) or `paras2s fit --config configs/sft.yaml` (paper scale), "
                "whose model.init_args.export_dir is that path, or point init_from at "
                "your SFT export"
            )
        self.scorer.check()

    def setup(self, stage: str) -> None:
        """Check the inputs, take tokenizer and codec from the data, resolve the config."""
        self.check_inputs()
        if self.hparams.init_from is not None:
            self._use_policy_tokenizer(self.hparams.init_from)
        self._resolve_query_transcript()
        super().setup(stage)

    def _resolve_query_transcript(self) -> None:
        """Whether the prompts carry ``t_i``: the SFT export's record unless overridden."""
        if self.policy_query_transcript is not None:
            return
        hp = self.hparams
        if hp.init_from is not None:
            hears = resolve_query_transcript(hp.init_from, hp.policy_query_transcript)
        else:  # a random policy has no record
            hears = bool(hp.policy_query_transcript)
        self.policy_query_transcript, self.query_transcript_source = hears, hp.query_transcript

    def _use_policy_tokenizer(self, path: str) -> None:
        """An exported policy carries its tokenizer: the data must use the same one."""
        from paras2s_pl.models.tokenizer import load_tokenizer

        dm = self._datamodule()
        if (Path(path) / "tokenizer_config.json").exists() and hasattr(dm, "use_tokenizer"):
            dm.use_tokenizer(load_tokenizer(path))

    def configure_model(self) -> None:
        """Build the policy and, with β > 0, the frozen reference (before any wrapping)."""
        if self.model is not None:
            return
        self._resolve_query_transcript()  # direct calls skip setup
        self._build_policy()
        hp = self.hparams
        fsdp2 = self._trainer is not None and uses_fsdp2(self.trainer.strategy)
        if max(hp.beta, hp.beta_audio or 0.0) > 0 and self._frozen["reference"] is None:
            if hp.init_from is not None:
                ref = DualStreamLM.from_pretrained(
                    hp.init_from, config=self.model.config, dtype=getattr(torch, hp.load_dtype)
                )
            elif fsdp2:  # a resumed run could not restore a random reference (not saved sharded)
                raise ValueError(
                    "GRPO under FSDP2 needs model.init_args.init_from (the SFT "
                    "policy, which is also the KL reference)"
                )
            else:  # a random policy: its initial weights are the reference
                ref = copy.deepcopy(self.model)
            self._frozen["reference"] = ref.requires_grad_(False).eval()
            if fsdp2 and hp.shard_reference:
                self._shard(ref)
        self._shard(self.model)

    @property
    def reference(self) -> DualStreamLM | None:
        """The frozen reference policy (None when β = 0)."""
        return self._frozen["reference"]

    def on_fit_start(self) -> None:
        """Check the batch shape, place the frozen models, set up the scorer and ASR."""
        hp, trainer = self.hparams, self.trainer
        dm = self._datamodule()
        per_rollout = getattr(dm, "batch_size", 1) * hp.group_size
        if per_rollout % self.micro_batches:
            raise ValueError(
                f"data.batch_size x model.group_size = {per_rollout} responses per rollout do "
                f"not split into trainer.accumulate_grad_batches={self.micro_batches} equal "
                "micro-batches; make it a divisor"
            )
        if trainer.max_steps is None or trainer.max_steps < 0:
            raise ValueError("GRPO prompts never run out: set trainer.max_steps")
        if self.reference is not None and not (hp.shard_reference and uses_fsdp2(trainer.strategy)):
            self.reference.to(hp.reference_device or self.device)
        self.scorer.setup(self.device)
        if hp.asr and self._frozen["asr"] is None:
            from paras2s_pl.bench.backends import build

            self._frozen["asr"] = build("asr", hp.asr, hp.asr_options)
        log.info(
            "GRPO: %d prompts x G=%d per rollout per device, %d micro-batches, mu=%d, beta=%s, "
            "scorer %s",
            getattr(dm, "batch_size", 0),
            hp.group_size,
            self.micro_batches,
            hp.num_iterations,
            hp.beta,
            self.scorer.describe(),
        )

    # ---- the training step ---------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Start the clock of this step (its update time excludes the rollout)."""
        self._batch_start = time.perf_counter()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Roll out at the start of each rollout; return one micro-batch's GRPO loss."""
        rollout, phase = int(batch["rollout"]), int(batch["phase"])
        if phase == 0 or self._buffer is None or self._buffer.rollout != rollout:
            if phase != 0:
                log.warning(
                    "rollout %d: no buffer at phase %d (checkpoint without it?): rolling out anew",
                    rollout,
                    phase,
                )
            self._buffer = self.make_rollout(batch["prompts"], rollout)
        micro = self._buffer.micro(phase % self.micro_batches, self.micro_batches)
        loss, stats = self.micro_batch_loss(micro)
        for name, value in stats.items():
            self._pass_stats[name].append(float(value))
        self.consumed_steps += 1
        return loss

    def micro_batch_loss(self, micro: RolloutBuffer) -> tuple[torch.Tensor, dict[str, Any]]:
        """Recompute log-probs with gradients on the micro-batch and return its loss."""
        hp = self.hparams
        micro = micro.to(self.device)
        audio_lp, text_lp, audio_logits, text_logits = self._micro_logprobs(
            self.model, micro, return_logits=True
        )
        beta_audio = hp.beta if hp.beta_audio is None else hp.beta_audio
        text = StreamTensors(
            text_lp, micro.old_text_logprobs, micro.ref_text_logprobs, micro.text_mask
        )
        audio = StreamTensors(
            audio_lp, micro.old_audio_logprobs, micro.ref_audio_logprobs, micro.audio_mask
        )
        loss, stats = dual_stream_grpo_loss(
            text,
            audio,
            micro.advantages,
            beta_text=hp.beta,
            beta_audio=beta_audio,
            clip_eps=hp.clip_eps,
            clip_eps_high=hp.clip_eps_high,
            aggregation=hp.aggregation,
            combine=hp.combine,
            denominator=micro.denominator,
        )
        # the denominator is the whole rollout's and Lightning averages the micro-batch
        # losses: scale so their average is the rollout's loss
        loss = loss * self.micro_batches
        stats = {k: v * self.micro_batches if k == "policy_loss" else v for k, v in stats.items()}
        stats["loss"] = loss.detach()
        if hp.log_entropy:
            with torch.no_grad():
                for name, logits, mask, temp in (
                    ("audio", audio_logits, micro.audio_mask, self.sampling.audio_temperature),
                    ("text", text_logits, micro.text_mask, self.sampling.text_temperature),
                ):
                    if self.sampling.restrict_vocab:
                        legal = legal_ids_mask(self.model.config, name, logits.device)
                        logits = logits.masked_fill(~legal, float("-inf"))
                    t = temp if temp > GREEDY_TEMPERATURE else 1.0
                    stats[f"entropy/{name}"] = entropy_from_logits(logits, mask, t)
        return loss, stats

    # ---- logging ---------------------------------------------------------------------------
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Add this step's update time; after each pass over the buffer log its metrics."""
        spent = time.perf_counter() - self._batch_start
        if int(batch["phase"]) == 0:
            spent -= sum(v for k, v in self._times.items() if k != "update")
        self._times["update"] += max(spent, 0.0)
        if (int(batch["phase"]) + 1) % self.micro_batches:
            return
        size = self._buffer.num_responses if self._buffer is not None else 1
        metrics = dict(self._rollout_log)
        metrics.update({k: float(np.mean(v)) for k, v in self._pass_stats.items()})
        if self.hparams.log_entropy:
            metrics["entropy"] = (metrics["entropy/audio"] + metrics["entropy/text"]) / 2
        metrics["time/update"] = self._times["update"]
        metrics["step_time"] = sum(self._times.values())
        if self.trainer.optimizers:
            metrics["lr"] = self.trainer.optimizers[0].param_groups[0]["lr"]
        for name, value in metrics.items():
            if math.isfinite(value):
                self.log(
                    f"train/{name}",
                    value,
                    on_step=True,
                    on_epoch=False,
                    batch_size=size,
                    prog_bar=name in ("reward", "kl"),
                )
        self._pass_stats.clear()
        self._times = Counter({"update": 0.0})
        if int(batch["phase"]) + 1 == self.steps_per_rollout:
            self._buffer = None  # finished: nothing to checkpoint

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the gradient norm before clipping (FSDP2: the global norm over the shards)."""
        # FSDP2: DTensor gradients, whose norm is the global one
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        norm = float(local_value(norm))
        self.log("train/grad_norm", norm, on_step=True, on_epoch=False, batch_size=1)

    def _log_examples(self, rows, transcripts, responses, rewards) -> None:
        if not isinstance(self.logger, TensorBoardLogger):
            return
        writer, step = self.logger.experiment, self.global_step
        lines = ["| key | transcript | response | reward | truncated |", "|---|---|---|---|---|"]
        group = self.hparams.group_size
        for n in range(min(self.hparams.num_log_examples, len(rows) // group)):
            i = n * group  # the first response of each of the first prompts
            prompt, response = rows[i], responses[i]
            cells = [prompt.key, transcripts[i], response.text, f"{float(rewards[i]):.3f}",
                     str(response.truncated)]  # fmt: skip
            lines.append("| " + " | ".join(html.escape(c).replace("|", "/") for c in cells) + " |")
            writer.add_audio(
                f"rollout/{n}_prompt", _clip(prompt.wav), step, sample_rate=prompt.sample_rate
            )
            if response.wav is not None:
                writer.add_audio(
                    f"rollout/{n}_response", _clip(response.wav), step, sample_rate=SCORE_RATE
                )
        writer.add_text("rollout/examples", "\n".join(lines), step)

    # ---- optimisation and checkpoints ------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the data position, an unfinished buffer and a random policy's reference."""
        state: dict[str, Any] = {"consumed_steps": self.consumed_steps}
        # (checkpoint callbacks run before on_train_batch_end clears a finished buffer)
        unfinished = self.consumed_steps % self.steps_per_rollout != 0
        if self._buffer is not None and unfinished:
            state["buffer"] = self._buffer.state_dict()
        if self.hparams.init_from is None and self.reference is not None:
            state["reference"] = {k: v.cpu() for k, v in self.reference.state_dict().items()}
        checkpoint["grpo"] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Inverse of :meth:`on_save_checkpoint`."""
        state = checkpoint.get("grpo", {})
        self.consumed_steps = int(state.get("consumed_steps", 0))
        buffer = state.get("buffer")
        self._buffer = RolloutBuffer.from_state_dict(buffer) if buffer is not None else None
        if "reference" in state:
            if self.reference is None:
                self.configure_model()
            self.reference.load_state_dict(state["reference"])


def _clip(wav: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(wav, dtype=torch.float32).clamp(-1, 1).reshape(1, -1)
