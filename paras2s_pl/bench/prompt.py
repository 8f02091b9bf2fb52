"""The judge's input: one (query, response) pair, and the guideline prompt built from it.

:func:`build_prompt` is the only place that fills the guideline (``guideline.md``, paper
§A.11.5). It uses :class:`string.Template`, which substitutes once: a ``$``, ``${…}`` or
``{…}`` inside a transcript is copied literally and can never fill another slot.

User information (the paper: "the transcription as well as the emotion, sarcasm, gender,
and age labels") is rendered as five lines, always in the same order::

    Transcription: I lost my job today.
    Emotion: sad
    Sarcasm: unknown
    Age: unknown
    Gender: unknown

A ParaS2SBench query carries exactly one label, the one its category defines (emotion,
iemocap and meld → Emotion; sarcasm → Sarcasm; age → Age; gender → Gender); the other
three are not annotated, so they read ``unknown`` rather than a guessed default ("adult",
"sincere", …) that could steer the judge. The lines stay (instead of being omitted) so
every prompt has the paper's shape and the judge is told the label is missing, not absent.
Agent information is ``Transcription: …`` and ``Tone: …`` (ASR text and style caption).

Run ``python -m paras2s_pl.bench.prompt`` to print a sample prompt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from paras2s_pl.data import labels

GUIDELINE_FILE = "guideline.md"
SLOTS = frozenset({"user_info", "agent_info"})
UNKNOWN = "unknown"
#: Label lines in the paper's slot order ({emotion}{sarcasm}{age}{gender}).
LABEL_FIELDS = ("Emotion", "Sarcasm", "Age", "Gender")
#: Which label line a category's ``style`` fills.
CATEGORY_FIELD = {
    "emotion": "Emotion",
    "iemocap": "Emotion",
    "meld": "Emotion",
    "sarcasm": "Sarcasm",
    "age": "Age",
    "gender": "Gender",
}
assert set(CATEGORY_FIELD) == set(labels.CATEGORIES), "labels.CATEGORIES changed: map it here"


@dataclass(frozen=True, kw_only=True)
class JudgeItem:
    """One response to judge: the query's transcript and label, the response's text and tone.

    Attributes:
        key: unique id (the query's ``__key__``, plus the system/sample id when several
            responses to one query are judged); the Batch API ``custom_id``.
        category: a :data:`paras2s_pl.data.labels.CATEGORIES` name.
        style: the query's label in that category (e.g. ``sad``, ``sarcastic``, ``child``).
        content: the query transcript.
        response_text: the response transcript (ASR ``C``).
        response_tone: the response's speaking-tone description (style captioner ``S``).
        pair_id: the contrasting-pair id of the query, for reports.
        system: an optional system message sent before the guideline (None: none is sent).
    """

    key: str
    category: str
    style: str
    content: str
    response_text: str
    response_tone: str
    pair_id: str = ""
    system: str | None = None

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("JudgeItem.key is empty; give each item a unique id")
        try:
            labels.check_style(self.category, self.style)
        except ValueError as err:
            raise ValueError(f"JudgeItem {self.key!r}: {err}") from None

    @classmethod
    def from_meta(cls, key: str, meta: Any, response_text: str, response_tone: str,
                  system: str | None = None) -> JudgeItem:  # fmt: skip
        """Build from a :class:`paras2s_pl.data.schema.QueryMeta` and a transcribed response."""
        return cls(key=key, category=meta.category, style=meta.style, content=meta.content,
                   response_text=response_text, response_tone=response_tone,
                   pair_id=getattr(meta, "pair_id", ""), system=system)  # fmt: skip


@cache
def load_guideline() -> Template:
    """The guideline template, its attribution comment removed; checks its two slots."""
    text = resources.files("paras2s_pl.bench").joinpath(GUIDELINE_FILE).read_text("utf-8")
    if text.startswith("<!--"):
        end = text.find("-->")
        if end < 0:
            raise ValueError(f"{GUIDELINE_FILE}: the header comment '<!--' is never closed")
        text = text[end + 3 :].lstrip("\n")
    template = Template(text)
    found = set(template.get_identifiers())
    if found != SLOTS or not template.is_valid():
        raise ValueError(
            f"{GUIDELINE_FILE}: placeholders are {sorted(found)}, expected {sorted(SLOTS)}; "
            "write a literal dollar sign as $$"
        )
    return template


def user_info(item: JudgeItem) -> str:
    """The user-information block: transcript, then the four label lines."""
    known = CATEGORY_FIELD[item.category]
    lines = [f"Transcription: {item.content}"]
    lines += [f"{f}: {item.style if f == known else UNKNOWN}" for f in LABEL_FIELDS]
    return "\n".join(lines)


def agent_info(item: JudgeItem) -> str:
    """The agent-information block: response transcript and tone."""
    return f"Transcription: {item.response_text}\nTone: {item.response_tone}"


def build_prompt(item: JudgeItem) -> str:
    """The filled guideline for ``item``; built fresh on every call, never reused."""
    return load_guideline().substitute(user_info=user_info(item), agent_info=agent_info(item))


def build_messages(item: JudgeItem) -> list[dict[str, str]]:
    """Chat messages for ``item``: optional system message, then the guideline prompt."""
    messages = [] if item.system is None else [{"role": "system", "content": item.system}]
    return messages + [{"role": "user", "content": build_prompt(item)}]


def prompt_sha256(item: JudgeItem) -> str:
    """Hex sha256 of what the judge is sent for ``item`` (the cache key with the judge name)."""
    payload = json.dumps(build_messages(item), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


if __name__ == "__main__":
    demo = JudgeItem(key="demo", category="emotion", style="sad", content="I lost my job today.",
                     response_text="I'm so sorry. Do you want to talk about it?",
                     response_tone="empathetic (female voice; low, slow, soft)")  # fmt: skip
    print(build_prompt(demo))
