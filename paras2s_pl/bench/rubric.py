"""The rubric judge: the guideline's five levels as transparent rules (offline stand-in).

**A stand-in for the LLM judge**, marked so in every report. It reads what an LLM judge
reads — the query's content and label, the response transcript and the response tone —
and applies the guideline (paper §A.11.5) in four steps:

1. *Content*: which label's cue words the response carries (:data:`CUES`, in
   :mod:`~paras2s_pl.bench.rubric_cues`). ``match`` when the query label's cues win;
   ``reverse`` when the winner is on the other side of the label (:data:`OPPOSITE`: joy
   for a sad user, thanks for a sarcastic compliment, a guardian redirect for an adult,
   items of the other gender); ``wrong`` when another label of the same side wins (a
   fearful user answered as if sad); ``generic`` when no cue is found.
2. *Tone*: the first word of the caption, graded against the label (:data:`TONE_FIT`,
   :data:`TONE_REVERSE`): ``fit`` enhances, ``reverse`` is jarring (a cheerful voice to a
   sad user; an angry, sarcastic or disgusted voice to anyone), else ``plain``.
3. *Level*:

   ========== ===== ====== ======== =================================================
   content    fit   plain  reverse  guideline level
   ========== ===== ====== ======== =================================================
   match      5     4      3        5 enhanced / 4 no enhancement / tone undercuts it
   generic    3     3 (2)  1        3 average; 2 flat reply to an emotional user;
                                    1 reverse empathy by tone
   wrong      2     2      1        2 wrong emotion identified
   reverse    1     1      1        1 reverse empathy, wrong-gender items, praise
                                    taken as complaint (or the reverse)
   ========== ===== ====== ======== =================================================

4. *Coherence gate* (:mod:`~paras2s_pl.bench.coherence`): a reply that says nothing is
   capped whatever its cues and tone — at **1** when empty or near-empty (fewer than two
   distinct content words: "", "sorry sorry sorry sorry", "Sion shks saown que"), at
   **2** when degenerate (repeated trigrams, doubled words, one word dominating, a list
   of cue words, an echo of the query, non-words, under six words, broken phrases,
   fragments chained by "and", words that do not follow each other). Without it cue-word
   spam and ASR word loops scored 4-5 and an empty reply 3, so a policy could raise its
   reward without answering (reward hacking). The gate never fires on the 576 seed
   reference replies, so they score as before (``tests/test_rubric.py``).

Cue words are matched on normalised transcripts (lower case, no punctuation), so ASR
output works; the lists were written from the guideline's examples and checked against
the mini-world reference replies (``tests/test_bench.py``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from paras2s_pl.bench.coherence import gate
from paras2s_pl.bench.judges import Judgement, OnResult
from paras2s_pl.bench.prompt import JudgeItem
from paras2s_pl.bench.rubric_cues import CUES

#: A reply to an age query of at least this many words without a child cue is adult help.
ADULT_MIN_WORDS = 6

#: Labels on the other side of each label: their cues answer the query the wrong way round.
OPPOSITE: dict[str, frozenset[str]] = {
    "happy": frozenset({"sad", "angry", "fear", "disgust", "sarcastic"}),
    "surprised": frozenset({"sad", "angry", "fear", "disgust", "sarcastic"}),
    "sad": frozenset({"happy", "surprised", "sincere"}),
    "angry": frozenset({"happy", "surprised", "sincere"}),
    "fear": frozenset({"happy", "surprised", "sincere"}),
    "disgust": frozenset({"happy", "surprised", "sincere"}),
    "sincere": frozenset({"sarcastic"}),
    "sarcastic": frozenset({"sincere", "happy"}),
    "child": frozenset({"adult"}),
    "adult": frozenset({"child"}),
    "male": frozenset({"female"}),
    "female": frozenset({"male"}),
}

#: Labels whose cues are compared for each query label (its category's other labels).
RIVALS: dict[str, tuple[str, ...]] = {
    **{
        e: ("happy", "surprised", "sad", "angry", "fear", "disgust")
        for e in ("happy", "surprised", "sad", "angry", "fear", "disgust")
    },
    "sincere": ("sincere", "sarcastic"),
    "sarcastic": ("sincere", "sarcastic"),
    "child": ("child", "adult"),
    "adult": ("child", "adult"),
    "male": ("male", "female"),
    "female": ("male", "female"),
}

#: Caption tone words that enhance a reply to each label (guideline rules 2-3).
TONE_FIT: dict[str, frozenset[str]] = {
    "happy": frozenset({"cheerful", "excited"}),
    "surprised": frozenset({"excited", "cheerful"}),
    "sad": frozenset({"soft", "sad", "calm"}),
    "angry": frozenset({"calm", "soft", "serious"}),
    "fear": frozenset({"calm", "soft"}),
    "disgust": frozenset({"soft", "calm", "sad", "serious"}),
    "sincere": frozenset({"cheerful", "excited"}),
    "sarcastic": frozenset({"soft", "calm", "serious"}),
    "child": frozenset({"calm", "soft", "cheerful", "serious"}),
    "adult": frozenset({"cheerful"}),
    "male": frozenset({"cheerful"}),
    "female": frozenset({"cheerful"}),
}
#: Tones that never suit an assistant, whatever the query.
HOSTILE_TONES = frozenset({"angry", "sarcastic", "disgusted"})
TONE_REVERSE: dict[str, frozenset[str]] = {
    **{e: frozenset({"sad"}) for e in ("happy", "surprised", "sincere")},
    **{
        e: frozenset({"cheerful", "excited"})
        for e in ("sad", "angry", "fear", "disgust", "sarcastic")
    },
}
#: Labels whose users expect emotional feedback: a flat reply with no cue scores 2.
EMOTIONAL = frozenset({"sad", "angry", "fear", "disgust"})
FLAT_TONES = frozenset({"neutral", "serious", "flat"})

LEVELS: dict[tuple[str, str], int] = {
    ("match", "fit"): 5, ("match", "plain"): 4, ("match", "reverse"): 3,
    ("generic", "fit"): 3, ("generic", "plain"): 3, ("generic", "reverse"): 1,
    ("wrong", "fit"): 2, ("wrong", "plain"): 2, ("wrong", "reverse"): 1,
    ("reverse", "fit"): 1, ("reverse", "plain"): 1, ("reverse", "reverse"): 1,
}  # fmt: skip


def normalise(text: str) -> str:
    """Lower case, apostrophes kept, other punctuation to spaces, single spaces."""
    return " " + re.sub(r"[^a-z0-9' -]+", " ", text.lower()).replace("  ", " ").strip() + " "


def cue_counts(text: str, styles: Sequence[str]) -> dict[str, int]:
    """How many cue phrases of each label occur in ``text`` (phrases match word-initially)."""
    norm = normalise(text)
    return {
        s: sum(bool(re.search(r"(?<![a-z'])" + re.escape(c), norm)) for c in CUES[s])
        for s in styles
    }


def _age_counts(text: str) -> dict[str, int]:
    """Child cues (caution, guardian redirect) or, lacking them, substantive adult help."""
    child = cue_counts(text, ("child",))["child"]
    adult = int(child == 0 and len(normalise(text).split()) >= ADULT_MIN_WORDS)
    return {"child": child, "adult": adult}


def content_verdict(style: str, text: str) -> str:
    """``match``, ``wrong``, ``reverse`` or ``generic`` (see the module docstring)."""
    if style in ("child", "adult"):
        counts = _age_counts(text)
    else:
        counts = cue_counts(text, tuple(dict.fromkeys((*RIVALS[style], *OPPOSITE[style]))))
    best = max(counts.values())
    if best == 0:
        return "generic"
    winners = {s for s, n in counts.items() if n == best}
    if style in winners:
        return "match"
    return "reverse" if winners & OPPOSITE[style] else "wrong"


def tone_word(tone: str) -> str:
    """The caption's tone word: its first word, lower case (``"cheerful (female …)"``)."""
    words = re.findall(r"[a-z]+", tone.lower())
    return words[0] if words else "unknown"


def tone_verdict(style: str, tone: str) -> str:
    """``fit``, ``plain`` or ``reverse`` for the response tone against the query label."""
    word = tone_word(tone)
    if word in HOSTILE_TONES or word in TONE_REVERSE.get(style, ()):
        return "reverse"
    return "fit" if word in TONE_FIT[style] else "plain"


def rubric_score(
    style: str, response_text: str, response_tone: str, query: str = ""
) -> tuple[int, str]:
    """The level and a one-line reason for one response to a query labelled ``style``.

    ``query`` is the query's content (transcript); without it the gate cannot tell an
    echo of the query from an answer, and every other check still applies.
    """
    content = content_verdict(style, response_text)
    tone = tone_verdict(style, response_tone)
    score = LEVELS[(content, tone)]
    if (
        content == "generic"
        and tone == "plain"
        and style in EMOTIONAL
        and (tone_word(response_tone) in FLAT_TONES)
    ):
        score = 2  # "a flat response to a sad question"
    reason = (
        f"content {content} for a {style} user, tone {tone_word(response_tone)!r} "
        f"is {tone} (rubric stand-in)"
    )
    if (capped := gate(response_text, query)) is not None and capped[0] < score:
        score, reason = capped[0], f"{capped[1]}, so at most {capped[0]}; {reason}"
    return score, reason


class RubricJudge:
    """Offline rule-based judge (the embedded default); a stand-in for the LLM judge."""

    name = "rubric-v2"  # v2: the coherence gate
    stand_in = True

    def score(self, items: Sequence[JudgeItem], on_result: OnResult | None = None
              ) -> list[Judgement]:  # fmt: skip
        """Score every item by :func:`rubric_score`."""
        out = []
        for i, item in enumerate(items):
            score, reason = rubric_score(
                item.style, item.response_text, item.response_tone, item.content
            )
            judgement = Judgement(
                score=score, reason=reason, raw=f"The reason is {reason}; The score is {score}."
            )
            if on_result is not None:
                on_result(i, judgement)
            out.append(judgement)
        return out
