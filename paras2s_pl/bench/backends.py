"""The bench's backend registries: one name → class map per part, resolved lazily.

``paras2s bench run --asr whisper --asr_options '{"model": "/ckpt/whisper-large-v3"}'``
builds ``WhisperASR(model=...)`` through :func:`build`. A new backend is one class that
implements the part's protocol plus one line here. Entries are ``"module:Class"`` strings
so that listing or choosing a backend imports only that backend.

* ``asr`` (:class:`paras2s_pl.audio.asr.ASR`): pocketsphinx (embedded default), whisper.
* ``captioner`` (:class:`paras2s_pl.audio.style.StyleCaptioner`): prosody (embedded
  default), audio_llm, openai.
* ``judge`` (:class:`paras2s_pl.bench.judges.Judge`): rubric (embedded stand-in), openai,
  openai_batch.
* ``responder`` (:class:`paras2s_pl.bench.systems.Responder`): seed (offline), openai.
"""

from __future__ import annotations

import importlib
from typing import Any

REGISTRIES: dict[str, dict[str, str]] = {
    "asr": {
        "pocketsphinx": "paras2s_pl.audio.asr:PocketSphinxASR",
        "whisper": "paras2s_pl.audio.asr:WhisperASR",
    },
    "captioner": {
        "prosody": "paras2s_pl.audio.style:ProsodyCaptioner",
        "audio_llm": "paras2s_pl.audio.style:AudioLLMCaptioner",
        "openai": "paras2s_pl.audio.style:OpenAIAudioCaptioner",
    },
    "judge": {
        "rubric": "paras2s_pl.bench.rubric:RubricJudge",
        "openai": "paras2s_pl.bench.judges:OpenAIJudge",
        "openai_batch": "paras2s_pl.bench.batch:OpenAIBatchJudge",
    },
    "responder": {
        "seed": "paras2s_pl.bench.systems:SeedResponder",
        "openai": "paras2s_pl.bench.systems:OpenAIResponder",
    },
}


class BenchError(ValueError):
    """A bench input or option that cannot be used; the message names it and the fix."""


def resolve(part: str, name: str) -> type:
    """The class registered as ``name`` for ``part``; :class:`BenchError` lists the names."""
    registry = REGISTRIES[part]
    if name not in registry:
        raise BenchError(f"unknown {part} {name!r}; choose one of {list(registry)}")
    module, _, cls = registry[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build(part: str, name: str, options: dict[str, Any] | None = None, **extra: Any) -> Any:
    """Instantiate backend ``name`` of ``part`` with ``options`` (and non-None ``extra``)."""
    cls = resolve(part, name)
    kwargs = {**(options or {}), **{k: v for k, v in extra.items() if v is not None}}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise BenchError(
            f"{part} {name!r} ({cls.__name__}) rejected options {sorted(kwargs)}: {err}; "
            f"see `help({cls.__module__}.{cls.__name__})`"
        ) from None
