"""A trained speech policy ready to answer spoken queries: :class:`Policy`, :func:`load_policy`.

Used by ``paras2s curate preferences`` (K sampled responses per query) and ``paras2s bench
respond --system policy`` (one response per test query). Loads any exported policy
(``SFTModule``/``GRPOModule`` ``export_dir``, or a ``save_pretrained`` directory) with the
tokenizer saved beside it and the codec named in its ``paras2s_policy.json``::

    policy = load_policy("runs/mini/sft_policy", sampling={"text_temperature": 0})
    [(codes, text)] = policy.respond(wav, 16000, k=1, seed=0)
    reply_wav, sr = policy.codec.decode(codes, text)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from paras2s_pl.audio.codec import AudioCodec, ProsodyCodec
from paras2s_pl.models.dual_stream import DualStreamLM
from paras2s_pl.models.layout import build_prompt, collate
from paras2s_pl.models.sampling import (
    SamplingConfig,
    generate,
    response_codes,
    response_text_ids,
)
from paras2s_pl.models.tokenizer import build_mini_tokenizer, load_tokenizer

#: "High temperature" sampling for diverse responses (paper §4.2); overridable.
CURATION_SAMPLING = {
    "audio_temperature": 1.0,
    "audio_top_k": 0,
    "text_temperature": 1.0,
    "text_top_k": 0,
    "max_new_tokens": 256,
}


@dataclass
class Policy:
    """A policy ready to answer queries: model, tokenizer, codec, sampling."""

    model: DualStreamLM
    tokenizer: Any
    codec: AudioCodec
    sampling: SamplingConfig
    query_transcript: bool = False
    path: str = ""

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return next(self.model.parameters()).device

    def respond(
        self, query_wav: np.ndarray, sample_rate: int, k: int, seed: int, content: str = ""
    ) -> list[tuple[torch.Tensor, str]]:
        """K sampled responses to one query: ``(codec codes, text)`` each; seeded."""
        cfg = self.model.config
        codes = torch.as_tensor(self.codec.encode(query_wav, sample_rate)).long()
        text_ids = (
            self.tokenizer(content, add_special_tokens=False)["input_ids"]
            if self.query_transcript and content
            else None
        )
        prompt = build_prompt(codes, cfg, text_ids)
        batch = collate([prompt] * k, cfg.text_blank_id, left_pad=True)
        batch = {k_: v.to(self.device) for k_, v in batch.items() if torch.is_tensor(v)}
        gen = torch.Generator(device=self.device).manual_seed(seed)
        rollout = generate(
            self.model,
            batch["audio_ids"],
            batch["text_ids"],
            batch["attention_mask"],
            self.sampling,
            gen,
        )
        texts = [
            self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            for ids in response_text_ids(rollout, cfg)
        ]
        return list(zip(response_codes(rollout, cfg), texts, strict=True))


def load_policy(
    path: str | Path,
    tokenizer: str | None = None,
    codec: AudioCodec | None = None,
    sampling: dict[str, Any] | None = None,
    device: str = "cpu",
    query_transcript: bool = False,
    dtype: str | None = None,
) -> Policy:
    """Load an exported policy (a stage's ``export_dir``, e.g. ``runs/mini/sft_policy``).

    The tokenizer is the one saved beside the weights (else ``tokenizer``, else the mini
    world's); the codec is ``codec`` or, from ``paras2s_policy.json``, its class with
    default arguments (else ProsodyCodec). ``dtype``: e.g. ``bfloat16`` for a 7B policy on GPU.
    """
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"--policy {path}: no config.json; give the policy directory the SFT fit exports "
            "(its export_dir: runs/mini/sft_policy with configs/mini/sft.yaml) or any "
            "DualStreamLM.save_pretrained directory"
        )
    torch_dtype = getattr(torch, dtype) if dtype else None
    model = DualStreamLM.from_pretrained(str(path), dtype=torch_dtype).to(device).eval()
    if tokenizer is None and (path / "tokenizer_config.json").exists():
        tokenizer = str(path)
    tok = load_tokenizer(tokenizer) if tokenizer else build_mini_tokenizer()
    if codec is None:
        info_file = path / "paras2s_policy.json"
        class_path = json.loads(info_file.read_text()).get("codec") if info_file.exists() else None
        if class_path:
            from paras2s_pl.models.reward import build_object

            codec = build_object({"class_path": class_path})
        else:
            codec = ProsodyCodec()
    model.config.check_codec(int(codec.vocab_size))
    if len(tok) > model.config.text_vocab_size:
        raise ValueError(
            f"--policy {path}: tokenizer has {len(tok)} ids, the model "
            f"{model.config.text_vocab_size} text ids; pass the policy's tokenizer"
        )
    cfg = SamplingConfig(**{**CURATION_SAMPLING, **(sampling or {})})  # overrides win
    return Policy(model, tok, codec, cfg, query_transcript, str(path))


def with_sampling(policy: Policy, **overrides: Any) -> Policy:
    """A copy of ``policy`` with sampling fields replaced (e.g. ``max_new_tokens``)."""
    return replace(policy, sampling=replace(policy.sampling, **overrides))
