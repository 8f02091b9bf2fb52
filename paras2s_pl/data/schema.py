"""Typed records for what a shard sample holds, and the batch-key names.

A WebDataset sample is ``__key__`` + audio entries + ``json`` metadata. The metadata of
each kind of set is a dataclass below; :func:`parse_meta` validates a decoded ``json``
against one of them and raises :class:`SchemaError` naming the field and the fix.

Kinds (``SCHEMAS``):

========== ============================================ ======================
kind        metadata                                    audio entries
========== ============================================ ======================
prompt      content, speaker, split (no labels: RL)     ``flac``
query       + category, style, style_description,      ``flac``
            topic, pair_id
demo        + response_text, response_tone (SFT)        ``flac``, ``resp.flac``
preference  + response_text, response_tone, score,      ``flac``, ``resp.flac``
            reason (judge-scored response)
========== ============================================ ======================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from paras2s_pl.data import labels

# Batch keys follow ``<role>_<modality>[_lens]`` (NeMo speechlm2 style).
USER_AUDIO = "user_audio"
ASSISTANT_AUDIO = "assistant_audio"

#: Tar member extensions of the audio entries; ``flac`` is the default encoding.
AUDIO_EXTENSIONS = ("flac", "wav")
QUERY_AUDIO_EXT = "flac"
RESPONSE_AUDIO_EXT = "resp.flac"


class SchemaError(ValueError):
    """Metadata that does not match its schema; the message names the field and the fix."""


@dataclass(frozen=True, kw_only=True)
class PromptMeta:
    """An unlabeled speech prompt (the RL set): what was said, by whom, in which split."""

    content: str
    speaker: str
    split: str

    audio_entries: ClassVar[tuple[str, ...]] = ("user",)

    def validate(self) -> None:
        """Raise :class:`SchemaError` when a field holds an impossible value."""
        if not self.content.strip():
            raise SchemaError("field 'content' is empty; give the transcript of the audio")


@dataclass(frozen=True, kw_only=True)
class QueryMeta(PromptMeta):
    """A labelled benchmark query (paper §3.1): content spoken in one of two contrasting styles."""

    category: str
    style: str
    style_description: str = ""
    topic: str = ""
    pair_id: str = ""

    def validate(self) -> None:
        """Check the prompt fields and that ``style`` is a label of ``category``."""
        super().validate()
        try:
            labels.check_style(self.category, self.style)
        except ValueError as err:
            raise SchemaError(f"field 'category'/'style': {err}") from None


@dataclass(frozen=True, kw_only=True)
class DemoMeta(QueryMeta):
    """An SFT demonstration: a query plus the reference response text and tone."""

    response_text: str
    response_tone: str

    audio_entries: ClassVar[tuple[str, ...]] = ("user", "assistant")

    def validate(self) -> None:
        """Check the query fields and that the response tone is known."""
        super().validate()
        if not self.response_text.strip():
            raise SchemaError("field 'response_text' is empty; give the reference response")
        if not self.response_tone.strip():
            raise SchemaError(
                f"field 'response_tone' is empty; use one of {list(labels.RESPONSE_TONES)}"
            )


@dataclass(frozen=True, kw_only=True)
class PreferenceMeta(QueryMeta):
    """A judged (query, response) pair: the reward model's training data (paper §4.2)."""

    response_text: str
    response_tone: str
    score: int
    reason: str = ""

    audio_entries: ClassVar[tuple[str, ...]] = ("user", "assistant")

    def validate(self) -> None:
        """Check the query fields and that the judge score is an integer in 1..5."""
        super().validate()
        score = self.score
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise SchemaError(f"field 'score' is {self.score!r}; expected an integer 1..5")


SCHEMAS: dict[str, type[PromptMeta]] = {
    "prompt": PromptMeta,
    "query": QueryMeta,
    "demo": DemoMeta,
    "preference": PreferenceMeta,
}


def schema_class(kind: str) -> type[PromptMeta]:
    """The metadata class of a set kind; raises ``ValueError`` listing the kinds."""
    try:
        return SCHEMAS[kind]
    except KeyError:
        raise ValueError(f"unknown schema {kind!r}; expected one of {list(SCHEMAS)}") from None


def parse_meta(raw: Any, kind: str) -> PromptMeta:
    """Validate decoded json against ``kind``; unknown extra fields are kept out, not errors."""
    cls = schema_class(kind)
    if not isinstance(raw, dict):
        raise SchemaError(f"metadata is {type(raw).__name__}, expected a json object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    missing = [
        name
        for name, f in fields.items()
        if name not in raw
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SchemaError(
            f"missing required field(s) {missing} for schema {kind!r}; add them to the json"
        )
    for name in fields:
        if name in raw and not isinstance(raw[name], str) and name != "score":
            raise SchemaError(f"field {name!r} is {type(raw[name]).__name__}, expected a string")
    meta = cls(**{k: v for k, v in raw.items() if k in fields})
    meta.validate()
    return meta


def meta_to_json(meta: PromptMeta) -> dict[str, Any]:
    """The json object stored in a shard for ``meta``."""
    return dataclasses.asdict(meta)


@dataclass
class Sample:
    """One decoded sample: metadata plus mono float32 audio at ``sample_rate``."""

    key: str
    meta: PromptMeta
    user_audio: np.ndarray
    sample_rate: int
    assistant_audio: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds of user audio."""
        return len(self.user_audio) / self.sample_rate
