"""A trained speech policy ready to answer spoken queries: :class:`Policy`, :func:`load_policy`.

Used by ``paras2s curate preferences`` (K sampled responses per query) and ``paras2s bench
respond --system policy`` (one response per test query). Loads any exported policy
(``SFTModule``/``GRPOModule`` ``export_dir``, or a ``save_pretrained`` directory) with the
tokenizer saved beside it and the codec named in its ``paras2s_policy.json``::

    policy = load_policy("runs/mini/sft_policy", sampling={"text_temperature": 0})
    [(codes, text)] = policy.respond(wav, 16000, k=1, seed=0, transcript="what was said")
    reply_wav, sr = policy.codec.decode(codes, text)

**The query transcript is a property of the policy.** The paper's policy answers
``(a_i, t_i)``, the query's audio tokens and its transcript (§4, eq. 2). Whether a policy hears
``t_i`` is decided where it is first trained (``SFTDataModule(query_transcript=...)``, on by
default), recorded as ``query_transcript`` in its ``paras2s_policy.json`` (with
``query_transcript_source``: where its training transcripts came from) and read back here, so
every consumer (``curate preferences``, GRPO's ``init_from``, ``bench respond --policy``) lays
out the prompt as the policy was trained. An export without the field predates it and was
trained without the transcript: it loads as such, said in one log line. A caller may override
the record (an ablation, say); a contradicting override is obeyed with a one-line warning
naming both values, because a policy fed a prompt layout it never saw answers out of
distribution and nothing else would show it. *Which* text ``t_i`` is, is the caller's:
the labelled ``content`` where the paper has labels (SFT, preference sampling), an ASR
transcript of the query audio where it has only speech (GRPO on unlabeled prompts, the
bench's systems).
"""

from __future__ import annotations

import json
import logging
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
from paras2s_pl.models.tokenizer import load_tokenizer, mini_tokenizer_for

log = logging.getLogger(__name__)

#: The file beside an exported policy's weights that says how to use it.
POLICY_INFO = "paras2s_policy.json"

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
    query_transcript: bool = False  # the prompt carries t_i (module docstring)
    path: str = ""

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return next(self.model.parameters()).device

    def respond(
        self, query_wav: np.ndarray, sample_rate: int, k: int, seed: int, transcript: str = ""
    ) -> list[tuple[torch.Tensor, str]]:
        """K sampled responses to one query: ``(codec codes, text)`` each; seeded.

        ``transcript`` (``t_i``) goes on the prompt's text stream when the policy hears it
        (:attr:`query_transcript`), else it is ignored.
        """
        cfg = self.model.config
        codes = torch.as_tensor(self.codec.encode(query_wav, sample_rate)).long()
        text_ids = (
            self.tokenizer(transcript, add_special_tokens=False)["input_ids"]
            if self.query_transcript and transcript
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
    query_transcript: bool | None = None,
    dtype: str | None = None,
) -> Policy:
    """Load an exported policy (a stage's ``export_dir``, e.g. ``runs/mini/sft_policy``).

    The tokenizer is the one saved beside the weights (else ``tokenizer``, else the mini
    world's kind with the model's text size, ``tokenizer.mini_tokenizer_for``); the codec is
    ``codec`` or, from ``paras2s_policy.json``, its class with default arguments (else
    ProsodyCodec). ``query_transcript``: None = as the export records
    (:func:`resolve_query_transcript`). ``dtype``: e.g. ``bfloat16`` for a 7B policy on GPU.
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
    size = model.config.text_vocab_size
    tok = load_tokenizer(tokenizer) if tokenizer else mini_tokenizer_for(size)
    info = read_policy_info(path)
    if codec is None:
        class_path = info.get("codec")
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
    hears = resolve_query_transcript(path, query_transcript)
    return Policy(model, tok, codec, cfg, hears, str(path))


def read_policy_info(path: str | Path) -> dict[str, Any]:
    """The export's ``paras2s_policy.json`` (empty when there is none, e.g. a converted base)."""
    info_file = Path(path) / POLICY_INFO
    return json.loads(info_file.read_text()) if info_file.exists() else {}


def recorded_query_transcript(path: str | Path) -> bool | None:
    """Whether the policy at ``path`` was trained hearing ``t_i``; None when not recorded."""
    value = read_policy_info(path).get("query_transcript")
    return None if value is None else bool(value)


def resolve_query_transcript(path: str | Path, override: bool | None = None) -> bool:
    """Whether the policy at ``path`` is to hear ``t_i``: its record, unless overridden.

    No record (an export from before the field, or no ``paras2s_policy.json``) means the
    old behaviour, no transcript, said in one info line. An override that contradicts the
    record is obeyed with a one-line warning (module docstring).
    """
    recorded = recorded_query_transcript(path)
    if recorded is None:
        log.info(
            "%s: %s records no query_transcript (an export from before the field): taken as "
            "trained without the query transcript", path, POLICY_INFO,
        )  # fmt: skip
        recorded = False
    if override is not None and override != recorded:
        log.warning(
            "%s was trained with query_transcript=%s but runs with query_transcript=%s (your "
            "override): its prompts are laid out unlike training", path, recorded, override,
        )  # fmt: skip
        return override
    return recorded


def with_sampling(policy: Policy, **overrides: Any) -> Policy:
    """A copy of ``policy`` with sampling fields replaced (e.g. ``max_new_tokens``)."""
    return replace(policy, sampling=replace(policy.sampling, **overrides))
