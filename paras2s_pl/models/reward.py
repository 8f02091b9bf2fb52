"""The reward model φ (paper §4.2): (query speech, response speech) → the judge's 1–5 score.

The score is **one character** "1".."5" predicted at one position (regression as
classification): a backend's ``forward`` returns ``logits5`` (B, 5), the logits of those
five tokens (column k-1 = "k"). For RL the score is the expected value ``Σ_k p_k · k``
(:meth:`RewardModel.score`); :meth:`RewardModel.score_argmax` gives the most likely digit.

Backends (a registry, :data:`REWARD_BACKENDS`; pick one with ``class_path`` in YAML):

* :class:`TokensRewardModel` (``tokens``, the mini world's default): the policy's own
  dual-stream decoder class (:class:`~paras2s_pl.models.dual_stream.DualStreamLM`, Qwen2
  layers) over the codec tokens and transcripts of query and response, trained fully; the
  score is read from its text head's rows of the five digit tokens.
* :class:`~paras2s_pl.models.reward_omni.OmniRewardModel` (``omni``, paper scale):
  Qwen2.5-Omni's thinker with LoRA adapters (``peft``), fed the guideline prompt around
  both audios.

**Featurizers.** Turning audio into model inputs is a separate, picklable object
(:attr:`RewardModel.featurizer`): ``featurizer(query_wav, response_wav, sr, query_text,
response_text) -> dict`` for one pair and ``featurizer.collate(list) -> batch``; the
DataModule runs it in DataLoader workers without shipping the weights there.

**Start-up check.** Every backend checks that its tokenizer writes "1".."5" as five
distinct single tokens (:func:`score_token_ids`; :class:`ScoreTokenError` names them).

**Saving.** ``save_pretrained(dir)`` writes ``reward_config.json`` (backend, score tokens,
prompt/layout settings, codec) plus the backend's weights and tokenizer;
:func:`load_reward_model` (= :meth:`RewardModel.from_pretrained`) reads any backend back.
GRPO loads the export of ``paras2s fit --config configs/mini/reward.yaml`` this way::

    rm = load_reward_model("runs/mini/reward_model", device="cpu")
    rewards = rm.score(query_wavs, response_wavs, 16000, query_texts, response_texts)  # (B,)

Run ``python -m paras2s_pl.models.reward DIR q.wav r.wav`` to score one pair.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from paras2s_pl.audio.codec import AudioCodec, ProsodyCodec
from paras2s_pl.losses.reward import argmax_score, expected_score
from paras2s_pl.models.dual_stream import DualStreamConfig, DualStreamLM
from paras2s_pl.models.tokenizer import build_mini_tokenizer, load_tokenizer

log = logging.getLogger(__name__)

SCORE_CHARS = ("1", "2", "3", "4", "5")
CONFIG_FILE = "reward_config.json"
#: backend name → "module:Class", imported only when a saved model names it: the omni backend
#: needs peft, and it imports this module (RewardModel), so naming it here must not import it.
REWARD_BACKENDS: dict[str, str] = {
    "tokens": "paras2s_pl.models.reward:TokensRewardModel",
    "omni": "paras2s_pl.models.reward_omni:OmniRewardModel",
}


class ScoreTokenError(ValueError):
    """The tokenizer cannot write the five score characters as five distinct single tokens."""


def score_token_ids(tokenizer: Any) -> list[int]:
    """Ids of "1".."5" as single tokens; :class:`ScoreTokenError` lists what they became."""
    ids, problems = [], []
    for char in SCORE_CHARS:
        enc = list(tokenizer(char, add_special_tokens=False)["input_ids"])
        pieces = tokenizer.convert_ids_to_tokens(enc)
        if len(enc) != 1 or tokenizer.decode(enc).strip() != char:  # several pieces, or <unk>
            problems.append(f"{char!r} -> ids {enc} (tokens {pieces})")
        else:
            ids.append(int(enc[0]))
    if not problems and len(set(ids)) != len(ids):
        problems.append(f"the ids {ids} are not distinct")
    if problems:
        name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        raise ScoreTokenError(
            f"tokenizer {name!r}: the score characters {list(SCORE_CHARS)} must be five distinct "
            f"single tokens, but {'; '.join(problems)}. Use a tokenizer that splits digits "
            "(Qwen2, the mini byte-level BPE) or add the five digits as tokens"
        )
    return ids


def _as_list(values: Sequence[Any] | None, n: int, what: str) -> list[Any]:
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{what}: got {len(values)} for {n} pairs")
    return values


def describe_object(obj: Any) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of an object whose init args are its attributes."""
    args = {}
    for name in inspect.signature(type(obj).__init__).parameters:
        value = getattr(obj, name, None)
        if name != "self" and value is not None:
            try:
                json.dumps(value)
            except TypeError:
                continue
            args[name] = value
    return {"class_path": f"{type(obj).__module__}.{type(obj).__qualname__}", "init_args": args}


def build_object(spec: dict[str, Any]) -> Any:
    """Inverse of :func:`describe_object`."""
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**spec.get("init_args", {}))


class RewardModel(nn.Module):
    """Base of the reward-model backends: scoring API, featurizer, saving and loading.

    A backend sets :attr:`backend`, :attr:`featurizer`, :attr:`score_ids` and implements
    :meth:`forward` ``(batch) -> logits5`` (B, 5), :meth:`settings` (what
    ``reward_config.json`` needs to rebuild it) and the ``_save``/``_load`` pair.
    """

    backend: ClassVar[str] = ""
    featurizer: Any
    score_ids: list[int]

    # ---- scoring ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return next(self.parameters()).device

    def batch_to(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """``batch`` with every tensor on ``device``."""
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

    @torch.no_grad()
    def score_logits(
        self,
        query_wavs: Sequence[np.ndarray],
        response_wavs: Sequence[np.ndarray],
        sample_rate: int,
        query_texts: Sequence[str | None] | None = None,
        response_texts: Sequence[str | None] | None = None,
        batch_size: int = 16,
    ) -> torch.Tensor:
        """(B, 5) float32 logits of "1".."5" on the model's device; eval mode, no grad."""
        n = len(query_wavs)
        if len(response_wavs) != n:
            raise ValueError(f"{n} query wavs but {len(response_wavs)} response wavs")
        q_texts = _as_list(query_texts, n, "query_texts")
        r_texts = _as_list(response_texts, n, "response_texts")
        was_training = self.training
        self.eval()
        try:
            out = []
            for start in range(0, n, batch_size):
                rows = range(start, min(start + batch_size, n))
                feats = [
                    self.featurizer(
                        query_wavs[i], response_wavs[i], sample_rate, q_texts[i], r_texts[i]
                    )
                    for i in rows
                ]
                batch = self.batch_to(self.featurizer.collate(feats), self.device)
                out.append(self(batch).float())
        finally:
            self.train(was_training)
        if not out:
            return torch.zeros((0, len(SCORE_CHARS)), device=self.device)
        return torch.cat(out)

    def score(
        self,
        query_wavs,
        response_wavs,
        sample_rate: int,
        query_texts=None,
        response_texts=None,
        batch_size: int = 16,
    ) -> torch.Tensor:
        """(B,) float32 expected score ``Σ p_k·k`` in [1, 5] (the RL reward); no grad."""
        logits = self.score_logits(
            query_wavs, response_wavs, sample_rate, query_texts, response_texts, batch_size
        )
        return expected_score(logits)

    def score_argmax(
        self,
        query_wavs,
        response_wavs,
        sample_rate: int,
        query_texts=None,
        response_texts=None,
        batch_size: int = 16,
    ) -> torch.Tensor:
        """(B,) long: the most likely score 1..5."""
        logits = self.score_logits(
            query_wavs, response_wavs, sample_rate, query_texts, response_texts, batch_size
        )
        return argmax_score(logits)

    # ---- saving and loading -------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """Backend settings written to ``reward_config.json`` (besides backend and scores)."""
        raise NotImplementedError

    def save_pretrained(
        self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None
    ) -> Path:
        """Write ``reward_config.json`` and the backend's files to ``path`` (created).

        ``state_dict``: this model's full weights to write instead of its own (a sharded
        model's, gathered: :func:`paras2s_pl.modules.sharding.full_state_dict`).
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._save(path, state_dict)
        config = {
            "backend": self.backend,
            "score_chars": list(SCORE_CHARS),
            "score_ids": list(self.score_ids),
            **self.settings(),
        }
        (path / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        log.info("saved %s reward model to %s", self.backend, path)
        return path

    def _save(self, path: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        raise NotImplementedError

    @classmethod
    def _load(cls, path: Path, config: dict[str, Any], **overrides: Any) -> RewardModel:
        raise NotImplementedError

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device | None = None, **overrides: Any
    ) -> RewardModel:
        """Load any backend saved with :meth:`save_pretrained`; frozen and in eval mode."""
        path = Path(path)
        cfg_file = path / CONFIG_FILE
        if not cfg_file.exists():
            raise FileNotFoundError(
                f"{cfg_file} missing: {path} is not a saved reward model; export one with "
                "RewardModel.save_pretrained (the reward fit does it at its end)"
            )
        config = json.loads(cfg_file.read_text())
        backend = config.get("backend")
        if backend not in REWARD_BACKENDS:
            raise ValueError(
                f"{cfg_file}: field 'backend' is {backend!r}; "
                f"expected one of {list(REWARD_BACKENDS)}"
            )
        module, _, name = REWARD_BACKENDS[backend].partition(":")
        impl = getattr(importlib.import_module(module), name)
        model = impl._load(path, config, **overrides)
        if list(model.score_ids) != list(config["score_ids"]):
            raise ValueError(
                f"{cfg_file}: saved score ids {config['score_ids']} but the tokenizer now gives "
                f"{model.score_ids}; load the tokenizer saved with the model"
            )
        model.requires_grad_(False).eval()
        return model.to(device) if device is not None else model


def load_reward_model(
    path: str | Path, device: str | torch.device | None = None, **overrides: Any
) -> RewardModel:
    """:meth:`RewardModel.from_pretrained` (what GRPO calls)."""
    return RewardModel.from_pretrained(path, device=device, **overrides)


# ----------------------------------------------------------------------------- tokens backend


def _span(codes: torch.Tensor, text: torch.Tensor, blank: int) -> tuple[torch.Tensor, ...]:
    """Codes on the audio stream and text on the text stream, the shorter padded with blank."""
    n = max(codes.numel(), text.numel())
    audio, words = torch.full((n,), blank), torch.full((n,), blank)
    audio[: codes.numel()], words[: text.numel()] = codes, text
    return audio, words


def reward_layout(
    query_codes: torch.Tensor,
    response_codes: torch.Tensor,
    cfg: DualStreamConfig,
    query_text_ids: Sequence[int] = (),
    response_text_ids: Sequence[int] = (),
    max_len: int = 512,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Dual-stream ids of one (query, response) pair; the score is read after the last one.

    ::

        audio: user_start media_begin q… media_end ctd msg_end assistant_start r…  msg_end
        text:  blank      blank       qt… blank    blank blank blank          rt… text_eos

    Like the policy's prompt (:func:`paras2s_pl.models.layout.build_prompt`), but the
    transcripts lie under their codes with the shorter stream padded by blank (the design's
    layout rule), so no transcript is cut. Over ``max_len`` the spans are cut (query first
    to half the room) and the third value is True.
    """
    blank = cfg.text_blank_id
    q_audio, q_text = _span(
        cfg.codes_to_ids(query_codes),
        torch.as_tensor(list(query_text_ids), dtype=torch.long),
        blank,
    )
    r_audio, r_text = _span(
        cfg.codes_to_ids(response_codes),
        torch.as_tensor(list(response_text_ids), dtype=torch.long),
        blank,
    )
    room = max_len - 7
    truncated = q_audio.numel() + r_audio.numel() > room
    if truncated:
        keep_q = min(q_audio.numel(), max(room - r_audio.numel(), room // 2))
        q_audio, q_text = q_audio[:keep_q], q_text[:keep_q]
        r_audio, r_text = r_audio[: room - keep_q], r_text[: room - keep_q]
    head = [cfg.user_start_id, cfg.media_begin_id]
    mid = [cfg.media_end_id, cfg.speech_ctd_id, cfg.msg_end_id, cfg.assistant_start_id]
    audio = torch.cat(
        [torch.tensor(head), q_audio, torch.tensor(mid), r_audio, torch.tensor([cfg.audio_end_id])]
    )
    text = torch.cat(
        [
            torch.full((2,), blank),
            q_text,
            torch.full((4,), blank),
            r_text,
            torch.tensor([cfg.text_eos_id]),
        ]
    )
    return audio, text, truncated


class TokensFeaturizer:
    """Audio → codec codes, text → token ids, laid out by :func:`reward_layout` (picklable)."""

    def __init__(
        self,
        codec: AudioCodec,
        tokenizer: Any,
        cfg: DualStreamConfig,
        max_len: int,
        query_transcript: bool,
        response_transcript: bool,
    ) -> None:
        self.codec, self.tokenizer, self.cfg, self.max_len = codec, tokenizer, cfg, max_len
        self.query_transcript, self.response_transcript = query_transcript, response_transcript

    def _text(self, text: str | None, use: bool) -> list[int]:
        if not use or not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(
        self,
        query_wav: np.ndarray,
        response_wav: np.ndarray,
        sample_rate: int,
        query_text: str | None = None,
        response_text: str | None = None,
    ) -> dict[str, Any]:
        """One pair's ``audio_ids``/``text_ids`` (1-D) and whether it was ``truncated``."""
        q = torch.as_tensor(self.codec.encode(query_wav, sample_rate)).long()
        r = torch.as_tensor(self.codec.encode(response_wav, sample_rate)).long()
        audio, text, truncated = reward_layout(
            q,
            r,
            self.cfg,
            self._text(query_text, self.query_transcript),
            self._text(response_text, self.response_transcript),
            self.max_len,
        )
        return {
            "audio_ids": audio,
            "text_ids": text,
            "truncated": truncated,
            "response_codes": int(r.numel()),
        }

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Left-pad (so every score position is the last column): ids and attention mask."""
        width = max(f["audio_ids"].numel() for f in features)
        blank = self.cfg.text_blank_id
        batch = {
            "audio_ids": torch.full((len(features), width), blank, dtype=torch.long),
            "text_ids": torch.full((len(features), width), blank, dtype=torch.long),
            "attention_mask": torch.zeros((len(features), width), dtype=torch.long),
        }
        for row, f in enumerate(features):
            n = f["audio_ids"].numel()
            batch["audio_ids"][row, width - n :] = f["audio_ids"]
            batch["text_ids"][row, width - n :] = f["text_ids"]
            batch["attention_mask"][row, width - n :] = 1
        return batch


class TokensRewardModel(RewardModel):
    """Dual-stream decoder over codec tokens + transcripts; score from the text head's digits.

    Args:
        config: :class:`DualStreamConfig` overrides of the tiny preset (``hidden_size``,
            ``num_hidden_layers`` …); ignored with ``init_from``.
        tokenizer: Tokenizer directory; None = the one saved in ``init_from``, else the mini
            world's tokenizer.
        codec: The audio codec (``class_path``/``init_args`` in YAML); None = ProsodyCodec.
        init_from: Start from a saved :class:`DualStreamLM` (e.g. the SFT policy's export),
            the usual way to initialise a reward model; None = random init.
        query_transcript: Put the query transcript under the query codes (when given).
        response_transcript: Put the response transcript under the response codes.
        max_len: Most positions of one pair (longer spans are cut and counted).

    The MIMO branch (audio head) of the decoder is unused and frozen.
    """

    backend = "tokens"

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        codec: Any = None,
        init_from: str | None = None,
        query_transcript: bool = True,
        response_transcript: bool = True,
        max_len: int = 512,
    ) -> None:
        super().__init__()
        if tokenizer is None and init_from and (Path(init_from) / "tokenizer_config.json").exists():
            tokenizer = init_from  # the policy export keeps its tokenizer beside the weights
        self.tokenizer_path = tokenizer
        tok = build_mini_tokenizer() if tokenizer is None else load_tokenizer(tokenizer)
        codec = ProsodyCodec() if codec is None else codec
        if init_from is not None:
            self.lm = DualStreamLM.from_pretrained(init_from).train()  # HF loads in eval mode
        else:
            fields = {"mimo_layers": 1, **(config or {})}
            cfg = DualStreamConfig.tiny(len(tok), int(codec.vocab_size), **fields)
            self.lm = DualStreamLM(cfg)
        cfg = self.lm.config
        cfg.check_codec(int(codec.vocab_size))
        if len(tok) > cfg.text_vocab_size:
            raise ValueError(
                f"tokenizer has {len(tok)} ids but the decoder's text_vocab_size is "
                f"{cfg.text_vocab_size}; use the tokenizer the model was built with"
            )
        self.score_ids = score_token_ids(tok)
        self.config_overrides = dict(config or {})
        self.featurizer = TokensFeaturizer(
            codec, tok, cfg, max_len, query_transcript, response_transcript
        )
        for part in (self.lm.mimo_layers, self.lm.mimo_norm, self.lm.mimo_output):
            part.requires_grad_(False)  # the audio head never sees a loss here

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 5) logits of "1".."5" after the last (left-padded) position."""
        out = self.lm(
            batch["audio_ids"],
            batch["text_ids"],
            attention_mask=batch["attention_mask"],
            logits_to_keep=1,
        )
        return out.text_logits[:, -1, self.score_ids]  # (B, 5)

    def settings(self) -> dict[str, Any]:
        """Codec, layout flags and max_len (the decoder config is in ``model/``)."""
        f = self.featurizer
        return {
            "codec": describe_object(f.codec),
            "query_transcript": f.query_transcript,
            "response_transcript": f.response_transcript,
            "max_len": f.max_len,
        }

    def _save(self, path: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        lm_state = (
            {k.removeprefix("lm."): v for k, v in state_dict.items() if k.startswith("lm.")}
            if state_dict is not None
            else None
        )
        self.lm.save_pretrained(path / "model", state_dict=lm_state)
        self.featurizer.tokenizer.save_pretrained(path / "tokenizer")

    @classmethod
    def _load(cls, path: Path, config: dict[str, Any], **overrides: Any) -> TokensRewardModel:
        kwargs = dict(
            tokenizer=str(path / "tokenizer"),
            codec=build_object(config["codec"]),
            init_from=str(path / "model"),
            query_transcript=config["query_transcript"],
            response_transcript=config["response_transcript"],
            max_len=config["max_len"],
        )
        return cls(**{**kwargs, **overrides})


def main() -> None:
    """CLI: score one (query, response) pair with a saved reward model."""
    import soundfile as sf

    from paras2s_pl.audio.io import resample, to_mono

    ap = argparse.ArgumentParser(description="Score one pair with a saved reward model.")
    ap.add_argument("model")
    ap.add_argument("query_wav")
    ap.add_argument("response_wav")
    ap.add_argument("--query-text")
    ap.add_argument("--response-text")
    args = ap.parse_args()
    rm = load_reward_model(args.model)
    q, sr = sf.read(args.query_wav, dtype="float32")
    r, sr2 = sf.read(args.response_wav, dtype="float32")
    q, r = to_mono(q), resample(to_mono(r), sr2, sr)
    logits = rm.score_logits([q], [r], sr, [args.query_text], [args.response_text])
    print(f"p(1..5) = {logits.softmax(-1)[0].tolist()}  expected = {expected_score(logits)[0]:.3f}")


if __name__ == "__main__":
    main()
