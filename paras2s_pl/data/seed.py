"""The mini world's seed queries: hand-written, scenario-controlled, with reference replies.

Each JSON line of ``paras2s_pl/data/seed/<category>.jsonl`` holds one neutral content,
its topic, the two contrasting styles that demand different answers, and for each style
a reference reply and the tone to speak it in (paper §3.1, A.3)::

    {"id": "emotion-001", "category": "emotion", "topic": "Travel", "content": "...",
     "styles": ["happy", "sad"],
     "responses": {"happy": {"text": "...", "tone": "cheerful"}, "sad": {...}}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from paras2s_pl.data import labels

SEED_KEYS = ("id", "category", "topic", "content", "styles", "responses")


class SeedError(ValueError):
    """A seed line that cannot be used; the message names the file, the line and the field."""


@dataclass(frozen=True)
class SeedResponse:
    """The reference reply for one style."""

    text: str
    tone: str


@dataclass(frozen=True)
class SeedItem:
    """One content with its contrasting pair of styles and a reply per style."""

    id: str
    category: str
    topic: str
    content: str
    styles: tuple[str, str]
    responses: dict[str, SeedResponse]


def default_seed_files() -> list[Path]:
    """The seed files shipped with the package, one per synthetic category."""
    root = resources.files("paras2s_pl.data") / "seed"
    return [Path(str(root / f"{c}.jsonl")) for c in labels.SYNTHETIC_CATEGORIES]


def _item(obj: object, where: str) -> SeedItem:
    if not isinstance(obj, dict):
        raise SeedError(f"{where}: expected a json object")
    missing = [k for k in SEED_KEYS if k not in obj]
    if missing:
        raise SeedError(f"{where}: missing field(s) {missing}; every line needs {list(SEED_KEYS)}")
    category, styles = obj["category"], obj["styles"]
    if not (isinstance(styles, list) and len(styles) == 2 and styles[0] != styles[1]):
        raise SeedError(f"{where}: field 'styles' must list two different labels, got {styles!r}")
    for style in styles:
        try:
            labels.check_style(category, style)
        except ValueError as err:
            raise SeedError(f"{where}: field 'styles': {err}") from None
    if not isinstance(obj["content"], str) or not any(ch.isalnum() for ch in obj["content"]):
        raise SeedError(f"{where}: field 'content' has no words; write the spoken sentence")
    if "." in obj["id"] or "/" in obj["id"]:
        raise SeedError(f"{where}: field 'id' {obj['id']!r} must not contain '.' or '/'")
    responses = {}
    for style in styles:
        reply = obj["responses"].get(style) if isinstance(obj["responses"], dict) else None
        if not isinstance(reply, dict) or not reply.get("text"):
            raise SeedError(f"{where}: field 'responses.{style}' needs 'text' and 'tone'")
        if reply.get("tone") not in labels.RESPONSE_TONES:
            raise SeedError(
                f"{where}: field 'responses.{style}.tone' is {reply.get('tone')!r}; "
                f"use one of {list(labels.RESPONSE_TONES)}"
            )
        responses[style] = SeedResponse(text=reply["text"], tone=reply["tone"])
    return SeedItem(
        id=obj["id"],
        category=category,
        topic=str(obj["topic"]),
        content=obj["content"].strip(),
        styles=(styles[0], styles[1]),
        responses=responses,
    )


def load_seed(paths: list[str | Path] | None = None) -> list[SeedItem]:
    """Read and validate seed files (default: the shipped ones); ids must be unique."""
    items: list[SeedItem] = []
    seen: dict[str, str] = {}
    for path in [Path(p) for p in (paths or default_seed_files())]:
        if not path.exists():
            raise FileNotFoundError(f"seed file {path} does not exist")
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise SeedError(f"{where}: not valid json ({err.msg})") from None
            item = _item(obj, where)
            if item.id in seen:
                raise SeedError(f"{where}: id {item.id!r} already used at {seen[item.id]}")
            seen[item.id] = where
            items.append(item)
    return items
