r"""The paper's reward model: Qwen2.5-Omni's thinker with LoRA adapters (paper §4.2, A.4).

The thinker (``transformers.Qwen2_5OmniThinkerForConditionalGeneration``: Whisper-style
audio tower + Qwen2.5 decoder) hears the query and the response inside the ParaS2SBench
guideline prompt (:func:`paras2s_pl.bench.prompt.load_guideline`, the judge's prompt ``r``)
and answers with one score character::

    <|im_start|>system\n{system_prompt}<|im_end|>\n<|im_start|>user\n{guideline with
      user info = "Speech: <|audio_bos|><|AUDIO|>×n<|audio_eos|>" (+ transcript),
      agent info = the same for the response}<|im_end|>\n<|im_start|>assistant\n{answer_prefix}

``<|AUDIO|>`` is repeated once per audio-encoder output frame (25 Hz), exactly as
``Qwen2_5OmniProcessor`` expands it; features are Whisper log-mels
(``WhisperFeatureExtractor``, 16 kHz, at most ``max_audio_seconds``). The score logits are
the last hidden state times the ``lm_head`` rows of "1".."5" (+ an optional trainable
delta, ``train_score_rows``), so no (B, L, 152k) logits tensor is ever made.

Only the LoRA adapters (``peft``; target modules, rank, alpha from the config, applied to
the language model's layers only) and the score-row delta train. ``save_pretrained`` writes
the adapter in PEFT format (``adapter/``), the trainable tensors
(``reward_weights.safetensors``), tokenizer, feature extractor and ``reward_config.json``
(base model path, LoRA and prompt settings, the guideline's sha256); with a random base
(``thinker_config``, tests) the whole model is saved.

Real use (one GPU, bf16)::

    OmniRewardModel(model="/ckpt/Qwen2.5-Omni-7B", lora_r=16, lora_alpha=32)

The thinker loads from the full Omni checkpoint (its ``thinker.*`` weights) or from a
thinker-only export. Nothing is downloaded unless ``local_files_only=False``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from paras2s_pl.audio.io import resample, to_mono
from paras2s_pl.bench.prompt import load_guideline
from paras2s_pl.models.reward import RewardModel, score_token_ids

RATE = 16000
#: Qwen2.5-Omni's documented system prompt.
DEFAULT_SYSTEM = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
    "perceiving auditory and visual inputs, as well as generating text and speech."
)
SPECIAL = {
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "audio_bos": "<|audio_bos|>",
    "audio": "<|AUDIO|>",
    "audio_eos": "<|audio_eos|>",
}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def audio_token_count(frames: int) -> int:
    """Audio-encoder outputs of ``frames`` mel frames (two stride-2 stages, as the processor)."""
    after_conv = (frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def lora_regex(target_modules: Sequence[str], scope: str = "language_model") -> str:
    """PEFT ``target_modules`` regex: the named projections inside ``scope``'s layers only."""
    return rf".*{scope}\.layers\.\d+\.(self_attn|mlp)\.({'|'.join(target_modules)})"


class OmniFeaturizer:
    """Guideline prompt ids with ``<|AUDIO|>`` runs + Whisper features of both audios."""

    def __init__(
        self,
        tokenizer: Any,
        feature_extractor: Any,
        system_prompt: str | None,
        answer_prefix: str,
        transcripts: bool,
        max_audio_seconds: float,
    ) -> None:
        self.tokenizer, self.fe = tokenizer, feature_extractor
        self.system_prompt, self.answer_prefix = system_prompt, answer_prefix
        self.transcripts, self.max_audio_seconds = transcripts, max_audio_seconds
        self.ids = {}
        for name, token in SPECIAL.items():
            idx = tokenizer.convert_tokens_to_ids(token)
            if idx is None or idx == tokenizer.unk_token_id:
                raise ValueError(
                    f"tokenizer {tokenizer.name_or_path!r} has no {token} token; "
                    "use Qwen2.5-Omni's tokenizer"
                )
            self.ids[name] = int(idx)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.ids["im_end"])

    def prompt_text(self, query_text: str | None = None, response_text: str | None = None) -> str:
        """The prompt with one ``<|AUDIO|>`` per audio (expanded in :meth:`__call__`)."""
        s = SPECIAL

        def info(text: str | None) -> str:
            line = f"Speech: {s['audio_bos']}{s['audio']}{s['audio_eos']}"
            return line + (f"\nTranscription: {text}" if self.transcripts and text else "")

        user = load_guideline().substitute(
            user_info=info(query_text), agent_info=info(response_text)
        )
        system = (
            f"{s['im_start']}system\n{self.system_prompt}{s['im_end']}\n"
            if self.system_prompt
            else ""
        )
        return (
            f"{system}{s['im_start']}user\n{user}{s['im_end']}\n{s['im_start']}assistant\n"
            f"{self.answer_prefix}"
        )

    def _features(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        x = resample(to_mono(wav), sample_rate, RATE)[: int(self.max_audio_seconds * RATE)]
        if x.size < 400:  # shorter than one mel window: pad with silence (counted upstream)
            x = np.pad(x, (0, 400 - x.size))
        out = self.fe(x, sampling_rate=RATE, padding="longest", return_tensors="np")
        return out["input_features"][0]  # (mel, frames)

    def __call__(
        self,
        query_wav: np.ndarray,
        response_wav: np.ndarray,
        sample_rate: int,
        query_text: str | None = None,
        response_text: str | None = None,
    ) -> dict[str, Any]:
        """One pair: ``input_ids`` (1-D) and the two feature matrices (mel, frames)."""
        feats = [self._features(query_wav, sample_rate), self._features(response_wav, sample_rate)]
        ids = self.tokenizer(self.prompt_text(query_text, response_text), add_special_tokens=False)[
            "input_ids"
        ]
        runs = iter(audio_token_count(f.shape[1]) for f in feats)
        expanded: list[int] = []
        for idx in ids:
            expanded += [idx] * next(runs) if idx == self.ids["audio"] else [idx]
        return {"input_ids": torch.tensor(expanded), "features": feats, "truncated": False}

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Left-padded ids + mask; features (2B, mel, frames) query/response per row, in order."""
        width = max(it["input_ids"].numel() for it in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, it in enumerate(items):
            n = it["input_ids"].numel()
            ids[row, width - n :], mask[row, width - n :] = it["input_ids"], 1
        feats = [f for it in items for f in it["features"]]
        frames = max(f.shape[1] for f in feats)
        features = torch.zeros((len(feats), feats[0].shape[0], frames))
        feature_mask = torch.zeros((len(feats), frames), dtype=torch.long)
        for i, f in enumerate(feats):
            features[i, :, : f.shape[1]] = torch.from_numpy(f)
            feature_mask[i, : f.shape[1]] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "input_features": features,
            "feature_attention_mask": feature_mask,
        }


def _thinker(
    model: str | None,
    thinker_config: dict | None,
    dtype: str | None,
    local_files_only: bool,
    attn_implementation: str | None,
) -> nn.Module:
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    if (model is None) == (thinker_config is None):
        raise ValueError(
            "OmniRewardModel: give exactly one of model= (a checkpoint path or "
            "hub id) or thinker_config= (random init, for tests)"
        )
    torch_dtype = getattr(torch, dtype) if dtype else None
    if thinker_config is not None:
        cfg = Qwen2_5OmniThinkerConfig(**thinker_config)
        thinker = Qwen2_5OmniThinkerForConditionalGeneration(cfg)
        return thinker.to(torch_dtype) if torch_dtype else thinker
    kwargs: dict[str, Any] = {"local_files_only": local_files_only}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    cfg_file = Path(model) / "config.json"
    full = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
    if full.get("model_type") == "qwen2_5_omni":  # the full Omni checkpoint: take its thinker
        kwargs["config"] = Qwen2_5OmniThinkerConfig.from_dict(full["thinker_config"])
        kwargs["key_mapping"] = {r"^thinker\.": ""}  # talker/token2wav weights are unused
    return Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        model, dtype=torch_dtype, **kwargs
    )


class OmniRewardModel(RewardModel):
    """Qwen2.5-Omni thinker + LoRA; the score is the next token after the guideline prompt.

    Args:
        model: Checkpoint directory (or hub id) of Qwen2.5-Omni / its thinker.
        thinker_config: ``Qwen2_5OmniThinkerConfig`` kwargs for a random model (tests).
        tokenizer: Tokenizer directory; default ``model``.
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha (scale = alpha / r).
        lora_dropout: Dropout on the LoRA input.
        target_modules: Projection names adapted inside the decoder layers.
        lora_scope: The submodule whose layers get adapters (the text decoder).
        train_score_rows: Train a delta on the ``lm_head`` rows of "1".."5".
        dtype: Weight dtype (``bfloat16`` on GPU; None = as loaded).
        drop_vision: Delete the (unused) vision tower to save memory.
        gradient_checkpointing: Recompute activations in the backward pass.
        system_prompt: System turn (None: none).
        answer_prefix: Assistant text before the score character.
        transcripts: Add transcripts (when given) under each audio in the prompt.
        max_audio_seconds: Cut longer audio (the audio tower's limit is 30 s).
        local_files_only: Never download (set False to allow the hub).
        attn_implementation: e.g. ``sdpa`` or ``flash_attention_2``.
    """

    backend = "omni"

    def __init__(
        self,
        model: str | None = None,
        thinker_config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        target_modules: list[str] | None = None,
        lora_scope: str = "language_model",
        train_score_rows: bool = True,
        dtype: str | None = None,
        drop_vision: bool = True,
        gradient_checkpointing: bool = False,
        system_prompt: str | None = DEFAULT_SYSTEM,
        answer_prefix: str = "The score is ",
        transcripts: bool = False,
        max_audio_seconds: float = 30.0,
        local_files_only: bool = True,
        attn_implementation: str | None = None,
    ) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoTokenizer, WhisperFeatureExtractor

        super().__init__()
        self.init_args = {
            k: v
            for k, v in locals().items()
            if k
            not in (
                "self",
                "__class__",
                "LoraConfig",
                "get_peft_model",
                "AutoTokenizer",
                "WhisperFeatureExtractor",
            )
        }
        thinker = _thinker(model, thinker_config, dtype, local_files_only, attn_implementation)
        if not hasattr(thinker.config, "vision_start_token_id"):
            # transformers 5.x reads it in get_rope_index but only the talker config has it
            thinker.config.vision_start_token_id = 151652
        if drop_vision:
            thinker.model.visual = None
        tok = AutoTokenizer.from_pretrained(tokenizer or model, local_files_only=local_files_only)
        fe_dir = Path(model) if model else None
        if fe_dir is not None and (fe_dir / "preprocessor_config.json").exists():
            fe = WhisperFeatureExtractor.from_pretrained(str(fe_dir))
        else:
            fe = WhisperFeatureExtractor(feature_size=thinker.config.audio_config.num_mel_bins)
        self.featurizer = OmniFeaturizer(
            tok, fe, system_prompt, answer_prefix, transcripts, max_audio_seconds
        )
        if self.featurizer.ids["audio"] != thinker.config.audio_token_id:
            raise ValueError(
                f"tokenizer's <|AUDIO|> is id {self.featurizer.ids['audio']} but the model's "
                f"audio_token_index is {thinker.config.audio_token_id}; pair the right tokenizer"
            )
        self.score_ids = score_token_ids(tok)
        lora = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=lora_regex(target_modules or LORA_TARGETS, lora_scope),
            bias="none",
        )
        self.peft_model = get_peft_model(thinker, lora)  # freezes the base weights
        if gradient_checkpointing:
            thinker.gradient_checkpointing_enable()
            thinker.enable_input_require_grads()
        hidden = thinker.config.text_config.hidden_size
        # float32 even on a bf16 base: lr 1e-6 updates would vanish in bf16 (as PEFT keeps
        # the adapters in float32 by default)
        delta = torch.zeros(len(self.score_ids), hidden, dtype=torch.float32)
        self.score_delta = nn.Parameter(delta, requires_grad=train_score_rows)

    @property
    def thinker(self) -> nn.Module:
        """The thinker (LoRA layers injected in place)."""
        return self.peft_model.base_model.model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 5) logits: last hidden state · (lm_head rows of "1".."5" + delta)ᵀ."""
        inner = self.thinker.model
        dtype = self.thinker.lm_head.weight.dtype
        out = inner(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            input_features=batch["input_features"].to(dtype),
            feature_attention_mask=batch["feature_attention_mask"],
        )
        last = out.last_hidden_state[:, -1]  # (B, H)
        rows = self.thinker.lm_head.weight[self.score_ids].float() + self.score_delta  # (5, H)
        return last.float() @ rows.T  # (B, 5)

    def settings(self) -> dict[str, Any]:
        """Constructor arguments + the guideline's hash (what scoring later needs)."""
        text = load_guideline().template
        return {
            "init_args": self.init_args,
            "guideline_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "prompt_example": self.featurizer.prompt_text(),
        }

    def _weights(
        self, state_dict: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        full = self.init_args["thinker_config"] is not None  # a random base must be saved
        return {
            k: v.detach().clone().contiguous()
            for k, v in (self.state_dict() if state_dict is None else state_dict).items()
            if full or "lora_" in k or k == "score_delta"
        }

    def _save(self, path: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        from safetensors.torch import save_file

        save_file(self._weights(state_dict), str(path / "reward_weights.safetensors"))
        adapter_state = None
        if state_dict is not None:  # the peft model's own keys, from a gathered state
            adapter_state = {
                k.removeprefix("peft_model."): v
                for k, v in state_dict.items()
                if k.startswith("peft_model.")
            }
        self.peft_model.save_pretrained(str(path / "adapter"), state_dict=adapter_state)
        self.featurizer.tokenizer.save_pretrained(path / "tokenizer")
        self.featurizer.fe.save_pretrained(path / "tokenizer")

    @classmethod
    def _load(cls, path: Path, config: dict[str, Any], **overrides: Any) -> OmniRewardModel:
        from safetensors.torch import load_file

        args = {**config["init_args"], "tokenizer": str(path / "tokenizer"), **overrides}
        model = cls(**args)
        state = load_file(str(path / "reward_weights.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(state) & set(missing):
            raise KeyError(f"{path}: weights do not fit the model (unexpected {unexpected[:5]})")
        return model
