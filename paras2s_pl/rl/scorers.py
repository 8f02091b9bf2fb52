"""Reward scorers for GRPO: what turns (prompt, sampled response) into one float reward.

A scorer is any :class:`Scorer` subclass, chosen in YAML by ``class_path``
(``model.init_args.scorer``). :class:`~paras2s_pl.modules.grpo.GRPOModule` calls
``scorer.setup(device)`` once and then, per rollout, ``scorer(prompts, transcripts,
responses)`` with one entry per response (a prompt repeats G times) and expects an (N,)
float tensor. A NaN or inf reward is fine: GRPO drops it and counts it (a failed judge call,
an undecodable response). Scorers never receive gradients and never join the optimizer.

* :class:`RewardModelScorer` (default): the frozen reward model of
  ``paras2s fit --config configs/mini/reward.yaml`` (any backend of
  :mod:`paras2s_pl.models.reward`), expected score ``Σ p_k·k`` in [1, 5]; it may sit on
  its own device (``device: cuda:1``).
* :class:`JudgeScorer`: the benchmark pipeline itself (style captioner ``S``, optional ASR
  ``C``, judge) for small runs: the offline rubric stand-in, or any OpenAI-compatible judge
  with a crash-safe SQLite cache. Needs labelled prompts (``query``/``demo`` shards).
* :class:`TokenFractionScorer`: a transparent toy reward (the fraction of response tokens in
  a chosen id range) for smoke tests and benchmarks: it needs no audio.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from paras2s_pl.audio.io import resample
from paras2s_pl.errors import MissingInputError

log = logging.getLogger(__name__)


@dataclass
class Response:
    """One sampled response as the scorer sees it (``wav`` only when the scorer needs audio)."""

    text: str  # the policy's text stream, decoded
    text_ids: list[int]
    codes: torch.Tensor  # (Nr,) codec codes of the audio stream
    finished: bool  # the audio end token was reached
    truncated: bool  # stopped by max_new_tokens
    wav: np.ndarray | None = None  # (n,) float32 at sample_rate, decoded by the codec
    sample_rate: int | None = None


class Scorer:
    """Base class of the GRPO reward scorers (see the module docstring)."""

    #: The module decodes each response's audio with the codec before calling the scorer.
    needs_audio: bool = True

    def check(self) -> None:
        """Fail fast (at start-up, before any model is built) when an input is missing."""

    def setup(self, device: torch.device) -> None:
        """Load what is needed; ``device`` is the policy's (a scorer may choose another)."""

    def __call__(
        self, prompts: Sequence[Any], transcripts: Sequence[str], responses: Sequence[Response]
    ) -> torch.Tensor:
        """(N,) float rewards of N responses.

        ``prompts[i]`` is the prompt ``responses[i]`` answers, ``transcripts[i]`` its query
        transcript. NaN marks a response that could not be scored.
        """
        raise NotImplementedError

    def describe(self) -> str:
        """One line for logs and run metadata."""
        return type(self).__name__


class RewardModelScorer(Scorer):
    """The distilled reward model (paper §4.2) as GRPO's reward.

    Args:
        path: A reward-model export (``reward_config.json`` inside): the reward fit writes it
            to ``model.init_args.export_dir`` (``runs/mini/reward_model`` in the mini config).
        device: Where the reward model runs; None = the policy's device.
        batch_size: Pairs per reward-model forward.
        dtype: Load dtype, e.g. ``bfloat16`` for a 7B Omni reward model on GPU; None = saved.
    """

    def __init__(
        self,
        path: str = "runs/mini/reward_model",
        device: str | None = None,
        batch_size: int = 16,
        dtype: str | None = None,
    ) -> None:
        self.path, self.device, self.batch_size, self.dtype = path, device, batch_size, dtype
        self.model = None

    def check(self) -> None:
        """The export must exist; the error names the command that writes it."""
        from paras2s_pl.models.reward import CONFIG_FILE

        if not (Path(self.path) / CONFIG_FILE).exists():
            raise MissingInputError(
                f"model.init_args.scorer.init_args.path={self.path!r}: no reward model there "
                f"({CONFIG_FILE} missing). Produce it with `paras2s fit --config "
                "configs/mini/reward.yaml` (mini world) or `paras2s fit --config "
                "configs/reward.yaml` (paper scale), whose model.init_args.export_dir is that "
                "path, or point the path at your export"
            )

    def setup(self, device: torch.device) -> None:
        """Load the reward model (frozen, eval) on ``self.device`` or the policy's device."""
        from paras2s_pl.models.reward import load_reward_model

        if self.model is not None:
            return
        self.check()
        model = load_reward_model(self.path, device=self.device or device)
        if self.dtype is not None:
            model = model.to(getattr(torch, self.dtype))
        self.model = model.requires_grad_(False).eval()

    def __call__(self, prompts, transcripts, responses) -> torch.Tensor:
        """Expected score Σ p_k·k; a response without audio scores NaN (dropped by GRPO).

        The reward model takes one sample rate per pair, but the prompt audio comes at the
        shard's rate (e.g. 24 kHz) and the responses at the codec's (16 kHz): both streams
        are resampled to the responses' rate first, each from its own rate.
        """
        n = len(responses)
        rewards = torch.full((n,), float("nan"))
        rows = [i for i, r in enumerate(responses) if r.wav is not None and r.wav.size]
        if not rows:
            return rewards
        rate = int(responses[rows[0]].sample_rate or prompts[rows[0]].sample_rate)
        queries: dict[int, np.ndarray] = {}  # a prompt repeats G times: resample it once
        for i in rows:
            if id(prompts[i]) not in queries:
                queries[id(prompts[i])] = resample(prompts[i].wav, prompts[i].sample_rate, rate)
        scores = self.model.score(
            [queries[id(prompts[i])] for i in rows],
            [resample(responses[i].wav, responses[i].sample_rate or rate, rate) for i in rows],
            rate,
            [transcripts[i] for i in rows],
            [responses[i].text for i in rows],
            batch_size=self.batch_size,
        )
        rewards[rows] = scores.float().cpu()
        return rewards

    def describe(self) -> str:  # noqa: D102
        return f"RewardModelScorer({self.path})"


class JudgeScorer(Scorer):
    """The benchmark's perception + judge as the reward (the paper's judge pipeline, directly).

    Each response is captioned by ``captioner`` (``S``), transcribed by ``asr`` (``C``) or
    taken from the policy's text stream (``asr: null``), and judged with the guideline
    against the prompt's labels; the 1–5 score is the reward. A judge error or an
    unparsable answer gives NaN (dropped and counted by GRPO).

    Args:
        judge: A judge name of :mod:`paras2s_pl.bench.backends` (``rubric``: the offline
            stand-in; ``openai``: any OpenAI-compatible endpoint).
        judge_options: Its constructor arguments (``model``, ``base_url``, …).
        captioner: Style-captioner name (``prosody``: embedded default).
        captioner_options: Its arguments.
        asr: ASR name (``pocketsphinx``, ``whisper``) or None to use the policy's text.
        asr_options: Its arguments.
        cache_dir: SQLite judgement cache (answers survive a crash); None = no cache.
    """

    def __init__(
        self,
        judge: str = "rubric",
        judge_options: dict[str, Any] | None = None,
        captioner: str = "prosody",
        captioner_options: dict[str, Any] | None = None,
        asr: str | None = None,
        asr_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        self.names = {"judge": judge, "captioner": captioner, "asr": asr}
        self.options = {"judge": judge_options, "captioner": captioner_options, "asr": asr_options}
        self.cache_dir = cache_dir
        self.judge = self.captioner = self.asr = None
        self._calls = 0

    def setup(self, device: torch.device) -> None:
        """Build the judge, captioner and ASR backends."""
        from paras2s_pl.bench.backends import build
        from paras2s_pl.bench.cache import CachedJudge

        if self.judge is not None:
            return
        judge = build("judge", self.names["judge"], self.options["judge"])
        self.judge = CachedJudge(judge, self.cache_dir) if self.cache_dir else judge
        self.captioner = build("captioner", self.names["captioner"], self.options["captioner"])
        if self.names["asr"]:
            self.asr = build("asr", self.names["asr"], self.options["asr"])

    def __call__(self, prompts, transcripts, responses) -> torch.Tensor:  # noqa: D102
        from paras2s_pl.bench.prompt import JudgeItem

        n = len(responses)
        rewards = torch.full((n,), float("nan"))
        rows = [i for i, r in enumerate(responses) if r.wav is not None and r.wav.size]
        unlabeled = [prompts[i].key for i in rows if not getattr(prompts[i], "category", None)]
        if unlabeled:
            raise ValueError(
                f"JudgeScorer needs labelled prompts (category, style) but {unlabeled[0]} has "
                "none: train on a 'query' or 'demo' split (data.split: train) or use a "
                "RewardModelScorer"
            )
        if not rows:
            return rewards
        rate = responses[rows[0]].sample_rate
        wavs = [responses[i].wav for i in rows]
        tones = self.captioner.describe(wavs, rate)
        texts = (
            self.asr.transcribe(wavs, rate)
            if self.asr is not None
            else [responses[i].text for i in rows]
        )
        self._calls += 1
        items = [
            JudgeItem.from_meta(f"{prompts[i].key}_g{self._calls}_{i}", prompts[i].meta, t, s)
            for i, t, s in zip(rows, texts, tones, strict=True)
        ]
        for i, verdict in zip(rows, self.judge.score(items), strict=True):
            if verdict.score is not None:
                rewards[i] = float(verdict.score)
        return rewards

    def describe(self) -> str:  # noqa: D102
        return f"JudgeScorer({self.names})"


class TokenFractionScorer(Scorer):
    """Reward = fraction of a response's tokens whose id lies in ``[low, high)``.

    ``stream="audio"``: over the codec codes (e.g. ``high=132`` of the prosody codec's 264
    rewards low-pitch frames); ``stream="text"``: over the text token ids. A response
    without tokens on that stream gets ``empty_reward``. No audio is decoded.
    """

    needs_audio = False

    def __init__(
        self, stream: str = "audio", low: int = 0, high: int = 132, empty_reward: float = 0.0
    ) -> None:
        if stream not in ("audio", "text"):
            raise ValueError(f"stream={stream!r}; expected 'audio' or 'text'")
        self.stream, self.low, self.high, self.empty_reward = stream, low, high, empty_reward

    def __call__(self, prompts, transcripts, responses) -> torch.Tensor:  # noqa: D102
        out = []
        for r in responses:
            ids = r.codes if self.stream == "audio" else torch.as_tensor(r.text_ids)
            ids = torch.as_tensor(ids).reshape(-1)
            hits = ((ids >= self.low) & (ids < self.high)).float()
            out.append(hits.mean().item() if ids.numel() else self.empty_reward)
        return torch.tensor(out, dtype=torch.float32)

    def describe(self) -> str:  # noqa: D102
        return f"TokenFractionScorer({self.stream} in [{self.low}, {self.high}))"
