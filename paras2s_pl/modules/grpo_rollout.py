r"""The GRPO rollout (steps 1–6 of :mod:`paras2s_pl.modules.grpo`): :class:`GRPORollout`.

A mixin of :class:`~paras2s_pl.modules.grpo.GRPOModule`, kept apart so the module file
holds the Lightning hooks and the loss while this one holds what happens between "B prompts"
and "a buffer ready to train on": transcripts, sampling G responses per prompt, decoding,
scoring, the frozen log-probs and the group advantages. It is not used on its own; run it
through the module::

    paras2s fit --config configs/mini/grpo.yaml

**Reproducible.** Each response samples from its own generator seeded by (``seed``, rollout
index, the prompt's slot over all ranks, g) (:meth:`GRPORollout._row_generators`), never
from the global RNG, so the same rollout index gives the same responses whatever ran before
it (a resumed run, a checkpoint mid-rollout, a second run of the stage) and however many
ranks share the rollout.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from paras2s_pl.audio.io import resample
from paras2s_pl.data.prompts import Prompt
from paras2s_pl.losses.grpo import group_advantages, loss_denominator
from paras2s_pl.models.dual_stream import DualStreamLM
from paras2s_pl.models.layout import build_prompt, collate
from paras2s_pl.models.sampling import (
    SamplingConfig,
    all_ranks_done,
    generate,
    response_codes,
    response_text_ids,
    sequence_logprobs,
)
from paras2s_pl.rl.buffer import RolloutBuffer
from paras2s_pl.rl.scorers import Response, Scorer

log = logging.getLogger(__name__)

#: Rollout sampling: temperature 1 and no truncation on both streams, so the log-probs GRPO
#: uses are those of the distribution the tokens were drawn from (overridable: ``sampling``).
ROLLOUT_SAMPLING = {
    "audio_temperature": 1.0,
    "audio_top_k": 0,
    "text_temperature": 1.0,
    "text_top_k": 0,
    "max_new_tokens": 256,
}
#: The rate responses are resampled to before scoring (the prompts' rate).
SCORE_RATE = 16000


class GRPORollout:
    """Rollout methods of :class:`~paras2s_pl.modules.grpo.GRPOModule` (module docstring).

    What they read from the module: ``hparams`` (``group_size``, ``seed``, ``streams``,
    ``scale_rewards``, ``advantage_eps``, ``aggregation``, ``combine``, ``num_iterations``,
    transcript options, logging periods), the policy ``model``, its ``tokenizer`` and
    ``codec``, the ``scorer``, the frozen ``reference`` and ASR, and ``micro_batches``.
    """

    hparams: Any
    model: DualStreamLM | None
    tokenizer: Any
    codec: Any
    scorer: Scorer
    sampling: SamplingConfig
    _frozen: dict[str, Any]
    policy_query_transcript: bool | None  # resolved by the module from its init_from export
    _transcripts: dict[str, str]
    _rollout_log: dict[str, float]
    _times: Counter

    @torch.no_grad()
    def make_rollout(self, prompts: Sequence[Prompt], rollout: int) -> RolloutBuffer:
        """Steps 1–6 of :mod:`paras2s_pl.modules.grpo` for one batch of prompts."""
        hp, cfg, times = self.hparams, self.model.config, {}
        group = hp.group_size
        t0 = time.perf_counter()
        transcripts = self.prompt_transcripts(prompts)
        rows = [p for p in prompts for _ in range(group)]
        row_transcripts = [t for t in transcripts for _ in range(group)]
        hears = self.policy_query_transcript
        query_text = [self._encode(t) if hears else None for t in transcripts]
        # each query laid out (and its transcript tokenized) once, then repeated G times
        prompts_ids = [
            build_prompt(p.codes, cfg, q) for p, q in zip(prompts, query_text, strict=True)
        ]
        examples = [ex for ex in prompts_ids for _ in range(group)]
        batch = collate(examples, cfg.text_blank_id, left_pad=True)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        generators = self._row_generators(rollout, len(prompts), group)
        was_training = self.model.training
        self.model.eval()
        try:
            result = generate(
                self.model,
                batch["audio_ids"],
                batch["text_ids"],
                batch["attention_mask"],
                self.sampling,
                generators,
                all_done=all_ranks_done,
            )
        finally:
            self.model.train(was_training)
        times["rollout"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        responses, decode_errors = self._responses(result)
        times["decode"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        rewards = (
            torch.as_tensor(self.scorer(rows, row_transcripts, responses), dtype=torch.float32)
            .reshape(-1)
            .cpu()
        )
        if rewards.numel() != len(rows):
            raise ValueError(
                f"{self.scorer.describe()} returned {rewards.numel()} rewards for {len(rows)} "
                "responses"
            )
        times["score"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        group_ids = torch.arange(len(prompts)).repeat_interleave(group)
        advantages, adv_stats = group_advantages(
            rewards, group_ids, hp.advantage_eps, hp.scale_rewards
        )
        valid = adv_stats.pop("valid").to(self.device)
        audio_mask = result.audio_mask & valid[:, None] & (hp.streams != "text")
        text_mask = result.text_mask & valid[:, None] & (hp.streams != "audio")
        buffer = RolloutBuffer(
            rollout=rollout,
            response_start=result.response_start,
            full_audio_ids=result.full_audio_ids,
            full_text_ids=result.full_text_ids,
            full_attention_mask=result.full_attention_mask,
            audio_mask=audio_mask,
            text_mask=text_mask,
            advantages=advantages.to(self.device),
            denominator=loss_denominator([text_mask, audio_mask], hp.aggregation, hp.combine),
        )
        self._fill_logprobs(buffer)
        times["logprobs"] = time.perf_counter() - t0

        self._rollout_log = self._rollout_metrics(
            rows, responses, rewards, adv_stats, result, decode_errors, times
        )
        self._times = Counter({"update": 0.0, **times})
        every = hp.log_examples_every_n_rollouts
        if every and rollout % every == 0 and self.trainer.is_global_zero:
            self._log_examples(rows, row_transcripts, responses, rewards)
        return buffer

    def _row_generators(self, rollout: int, prompts: int, group: int) -> list[torch.Generator]:
        """One generator per response, seeded by (seed, rollout, global prompt slot, g).

        A prompt's slot is its place in the rollout over all ranks (rank r holds slots
        r * B .. r * B + B - 1), so its G responses are the same on 1 rank with the global
        batch as on n ranks: the run does not depend on how many devices it had.
        """
        rank = self.global_rank if self._trainer is not None else 0
        base = (self.hparams.seed * 1_000_003 + rollout) * 1_000_033
        return [
            torch.Generator(device=self.device).manual_seed((base + slot) * 4099 + g)
            for slot in range(rank * prompts, (rank + 1) * prompts)
            for g in range(group)
        ]

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_transcripts(self, prompts: Sequence[Prompt]) -> list[str]:
        """The query transcripts (shard ``content`` or ASR, cached per prompt key)."""
        if self.hparams.query_transcript == "shard":
            return [p.content for p in prompts]
        todo = [p for p in prompts if p.key not in self._transcripts]
        if todo:
            texts = self._frozen["asr"].transcribe([p.wav for p in todo], todo[0].sample_rate)
            self._transcripts.update({p.key: t for p, t in zip(todo, texts, strict=True)})
        return [self._transcripts[p.key] for p in prompts]

    def _responses(self, result) -> tuple[list[Response], int]:
        """Detokenize every response and, when the scorer listens, decode its audio."""
        cfg = self.model.config
        text_ids = response_text_ids(result, cfg)
        texts = self.tokenizer.batch_decode(text_ids, skip_special_tokens=True)
        codes = response_codes(result, cfg)
        responses = [
            Response(
                text=t.strip(),
                text_ids=ids,
                codes=c,
                finished=bool(f),
                truncated=bool(tr),
            )
            for t, ids, c, f, tr in zip(
                texts,
                text_ids,
                codes,
                result.finished.tolist(),
                result.truncated.tolist(),
                strict=True,
            )
        ]
        errors = 0
        if self.scorer.needs_audio:
            for i, r in enumerate(responses):
                if r.codes.numel() == 0:
                    errors += 1
                    continue
                try:
                    wav, sr = self.codec.decode(r.codes, r.text or None)
                    wav = resample(np.asarray(wav, dtype=np.float32).reshape(-1), sr, SCORE_RATE)
                    if not wav.size or not np.isfinite(wav).all():
                        raise ValueError("empty or non-finite audio")
                except Exception as err:  # one bad response must not stop training
                    errors += 1
                    log.warning("could not decode response %d: %r", i, err)
                    continue
                r.wav, r.sample_rate = wav, SCORE_RATE
            if self.hparams.response_transcript == "asr":
                heard = [r for r in responses if r.wav is not None]
                if heard:
                    asr_texts = self._frozen["asr"].transcribe([r.wav for r in heard], SCORE_RATE)
                    for r, t in zip(heard, asr_texts, strict=True):
                        r.text = t
        return responses, errors

    def _micro_logprobs(
        self, model: DualStreamLM, micro: RolloutBuffer, return_logits: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """:func:`sequence_logprobs` of ``model`` on exactly the micro-batch's sampled streams."""
        return sequence_logprobs(
            model,
            micro.full_audio_ids,
            micro.full_text_ids,
            micro.full_attention_mask,
            micro.response_start,
            self.sampling.temperatures,
            restrict_vocab=self.sampling.restrict_vocab,
            masks=(micro.audio_mask, micro.text_mask),
            return_logits=return_logits,
        )

    def _fill_logprobs(self, buffer: RolloutBuffer) -> None:
        """Reference (β > 0) and sampling-policy (μ > 1) log-probs, micro-batch by micro-batch."""
        hp = self.hparams
        need_old = hp.num_iterations > 1
        models = {"ref": self.reference} if self.reference is not None else {}
        if need_old:
            models["old"] = self.model
        for prefix, model in models.items():
            device = next(model.parameters()).device
            parts: dict[str, list[torch.Tensor]] = {"audio": [], "text": []}
            was_training = model.training
            model.eval()
            try:
                for i in range(self.micro_batches):
                    micro = buffer.micro(i, self.micro_batches).to(device)
                    audio_lp, text_lp = self._micro_logprobs(model, micro)
                    width = buffer.audio_mask.shape[1]
                    for name, lp in (("audio", audio_lp), ("text", text_lp)):
                        lp = torch.nn.functional.pad(lp.float(), (0, width - lp.shape[1]))
                        parts[name].append(lp.to(self.device))
            finally:
                model.train(was_training)
            setattr(buffer, f"{prefix}_audio_logprobs", torch.cat(parts["audio"]))
            setattr(buffer, f"{prefix}_text_logprobs", torch.cat(parts["text"]))

    def _rollout_metrics(
        self, rows, responses, rewards, adv_stats, result, decode_errors, times
    ) -> dict[str, float]:
        finite = torch.isfinite(rewards)
        metrics = {k: float(v) for k, v in adv_stats.items()}
        metrics["num_nonfinite_rewards"] = metrics.pop("num_nonfinite")
        by_category: dict[str, list[float]] = defaultdict(list)
        for prompt, reward, ok in zip(rows, rewards.tolist(), finite.tolist(), strict=True):
            if ok and prompt.category:
                by_category[prompt.category].append(reward)
        for category, values in by_category.items():
            metrics[f"reward/{category}"] = float(np.mean(values))
        seconds = [len(r.wav) / r.sample_rate for r in responses if r.wav is not None]
        metrics.update(
            {
                "completions/mean_length": float(result.lengths.float().mean()),
                "completions/mean_text_tokens": float(result.text_mask.sum(1).float().mean()),
                "completions/mean_audio_tokens": float(result.audio_mask.sum(1).float().mean()),
                "completions/clipped_ratio": float(result.truncated.float().mean()),
                "completions/decode_errors": float(decode_errors),
            }
        )
        if seconds:
            metrics["completions/mean_seconds"] = float(np.mean(seconds))
        metrics.update({f"time/{k}": v for k, v in times.items()})
        return metrics
