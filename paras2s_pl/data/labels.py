"""The label vocabulary of ParaS2SBench and the mini world.

One place names every category, every style label a query may carry, the contrasting
pairs that share one content, the tones a response may be spoken in, and the TTS
speakers with their train/test split. Everything else (schema validation, TTS presets,
the seed data, the rubric judge) refers to these names.
"""

from __future__ import annotations

from typing import Final

#: Synthetic categories (paper Table 5) and the real-speech ones (IEMOCAP, MELD).
SYNTHETIC_CATEGORIES: Final = ("emotion", "sarcasm", "age", "gender")
REAL_CATEGORIES: Final = ("iemocap", "meld")
CATEGORIES: Final = SYNTHETIC_CATEGORIES + REAL_CATEGORIES

EMOTIONS: Final = ("happy", "surprised", "sad", "angry", "fear", "disgust")

#: Style labels each category admits. ``neutral`` is a TTS preset, not a query label.
STYLES: Final[dict[str, tuple[str, ...]]] = {
    "emotion": EMOTIONS,
    "sarcasm": ("sincere", "sarcastic"),
    "age": ("adult", "child"),
    "gender": ("male", "female"),
    "iemocap": EMOTIONS,
    "meld": EMOTIONS,
}

#: Contrasting emotion pairs used by the seed data (paper A.11.3: "OPPOSITE emotions").
EMOTION_PAIRS: Final = (
    ("happy", "sad"),
    ("happy", "angry"),
    ("angry", "fear"),
    ("surprised", "disgust"),
    ("sad", "surprised"),
    ("happy", "fear"),
)

#: Tones a response may be spoken in (SFT demos carry one; the TTS has a preset for each;
#: the style captioner and the rubric judge use the same words).
RESPONSE_TONES: Final = (
    "cheerful",  # share joy, thank a sincere compliment
    "excited",  # share surprise
    "calm",  # de-escalate anger, steady a fearful user
    "empathetic",  # comfort sadness or disgust: soft, slow, low
    "gentle",  # talk to a child: warm, clear, slower
    "apologetic",  # answer sarcasm: soft, slightly low
    "serious",  # caution and safety
    "neutral",  # plain, informative
)

#: Every label the TTS can speak: query styles, response tones and ``neutral``.
TTS_STYLES: Final = tuple(
    dict.fromkeys(
        [s for c in SYNTHETIC_CATEGORIES for s in STYLES[c]] + ["neutral"] + list(RESPONSE_TONES)
    )
)

#: eSpeak NG voice variants used as speakers, by gender and split. Train and test speakers
#: are disjoint (paper §3.1 step 4). The assistant's voice for responses is fixed.
SPEAKERS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "train": {"male": ("m1", "m2", "m3", "m4", "m5"), "female": ("f1", "f2", "f3")},
    "test": {"male": ("m6", "m7"), "female": ("f4", "f5")},
}
ASSISTANT_SPEAKER: Final = "f2"


def speaker_gender(speaker: str) -> str:
    """Return ``male`` or ``female`` for a speaker name of :data:`SPEAKERS`."""
    for split in SPEAKERS.values():
        for gender, names in split.items():
            if speaker in names:
                return gender
    raise KeyError(f"unknown speaker {speaker!r}; known: {all_speakers()}")


def all_speakers() -> tuple[str, ...]:
    """All speaker names, train then test."""
    return tuple(s for split in SPEAKERS.values() for names in split.values() for s in names)


def check_style(category: str, style: str) -> None:
    """Raise ``ValueError`` naming the fix when ``style`` is not a label of ``category``."""
    if category not in STYLES:
        raise ValueError(f"unknown category {category!r}; expected one of {list(CATEGORIES)}")
    if style not in STYLES[category]:
        raise ValueError(
            f"unknown style {style!r} for category {category!r}; "
            f"expected one of {list(STYLES[category])}"
        )


#: A spoken-style description per label: stored as ``style_description`` in query shards,
#: and the instruction an instruction-following TTS (gpt-4o-mini-tts) would be given.
STYLE_DESCRIPTIONS: Final[dict[str, str]] = {
    "happy": "happy and upbeat: high, lively pitch, quick pace, bright voice",
    "surprised": "surprised: sudden high pitch jumps, wide pitch range, quick pace",
    "sad": "sad: low, flat pitch, slow pace, quiet voice",
    "angry": "angry: loud, tense, fast and clipped",
    "fear": "fearful: high, trembling, narrow pitch, hurried and breathy",
    "disgust": "disgusted: low, drawn-out, slow, with a falling pitch",
    "sincere": "sincere: warm, steady, natural pitch and pace",
    "sarcastic": "sarcastic: slow, drawn-out, exaggerated pitch swings, mocking",
    "adult": "an adult speaker with a natural, steady voice",
    "child": "a young child: very high pitch, small bright voice, quick pace",
    "male": "a man with a lower-pitched voice",
    "female": "a woman with a higher-pitched voice",
    "neutral": "neutral: plain, even pitch and pace",
    "cheerful": "cheerful: bright, high, lively pitch, upbeat pace",
    "excited": "excited: high, wide pitch swings, fast and energetic",
    "calm": "calm: steady, moderate-low pitch, slow, even pace",
    "empathetic": "empathetic: soft, low, gentle and slow",
    "gentle": "gentle: warm, clear, slightly high and slow, soft volume",
    "apologetic": "apologetic: soft, slightly low, careful and slow",
    "serious": "serious: low, firm, steady pace, little pitch movement",
}
