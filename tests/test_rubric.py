"""The rubric judge's coherence gate (``bench/coherence.py``): degenerate replies cannot
score above 2, the seed reference replies are never touched. Instant (the seed and the
pocketsphinx dictionary and LM, read once)."""

from __future__ import annotations

import random

import pytest

from paras2s_pl.bench import coherence, rubric
from paras2s_pl.bench.coherence import gate, measure, tokens
from paras2s_pl.bench.prompt import JudgeItem
from paras2s_pl.bench.rubric import RubricJudge, rubric_score
from paras2s_pl.bench.rubric_cues import CUES
from paras2s_pl.data.seed import load_seed

SFT_LOOP = "a slower the loans that's a lot this loans loans and a blow and a blow and a blow"
#: The issue's examples: (style, transcript, tone, level without the gate, cap with it).
ISSUE = [
    ("adult", SFT_LOOP, "soft", 4, 2),
    ("sad", "sorry sorry sorry sorry", "soft", 5, 1),
    ("sarcastic", "that sounds frustrating frustrating annoying annoying", "soft", 5, 2),
    ("sad", "", "calm", 3, 1),
    ("happy", "and a blow and a blow and a blow", "cheerful", 3, 1),
    ("happy", "Sion shks saown que dind qelen fobir", "cheerful", 3, 1),
    ("angry", "sorry, frustrating, annoying, unfair, upsetting, disappointing", "calm", 5, 2),
]


def no_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rubric, "gate", lambda text, query="": None)


@pytest.mark.parametrize(("style", "text", "tone", "ungated", "cap"), ISSUE)
def test_issue_examples_are_capped(monkeypatch, style, text, tone, ungated, cap):
    score, reason = rubric_score(style, text, tone, "My sister is moving away.")
    assert score <= cap and reason.startswith("incoherent: ")
    no_gate(monkeypatch)  # what the rubric gave them before the gate: the gate is what caps
    assert rubric_score(style, text, tone, "My sister is moving away.")[0] == ungated


def test_reason_names_each_failed_check_and_keeps_the_verdict():
    score, reason = rubric_score("sarcastic", ISSUE[2][1], "soft")
    assert score == 2
    assert "2 doubled words (frustrating, annoying)" in reason
    assert "cue-word list (67% cue words)" in reason
    assert reason.endswith(
        "; content match for a sarcastic user, tone 'soft' is fit (rubric stand-in)"
    )
    assert rubric_score("sad", "", "soft")[1].startswith("incoherent: empty reply, so at most 1")


def test_measures_worked_by_hand():
    """The loop "and a blow" ×3: 7 trigrams, the last 4 repeat an earlier one → 4/7; 1 distinct
    content word ("blow") → near-empty. The frustrated reply: 6 words, 2 doubled, cue
    phrases cover frustrating ×2 + annoying ×2 = 4/6."""
    loop = measure("and a blow and a blow and a blow")
    assert loop.words == 9 and loop.repeated_trigrams == pytest.approx(4 / 7)
    assert loop.content_words == 1 and loop.top_word == "blow" and loop.top_count == 3
    spam = measure(ISSUE[2][1])
    assert spam.doubled == ("frustrating", "annoying") and spam.cue_share == pytest.approx(4 / 6)
    salad = measure("Sion shks saown que dind qelen fobir")
    assert salad.real_words == 1 and salad.real_share == pytest.approx(1 / 7)
    assert measure("the a the a that").broken == ("the a", "a the", "the a")
    assert tokens("Don’t — stop!") == ["don't", "stop"]


def test_context_support_ranks_a_sentence_above_its_shuffle():
    sentence = coherence.context_support(tokens("the top of the hill"))
    shuffled = coherence.context_support(tokens("hill the of top the"))
    assert sentence > 0 > shuffled


def test_without_the_english_lm_the_other_checks_still_gate(monkeypatch):
    monkeypatch.setattr(coherence, "_english_lm", lambda: None)
    assert measure("the top of the hill").context_support is None
    assert gate(SFT_LOOP) is not None and gate("I'm so sorry, that sounds really hard.") is None


def test_echo_of_the_query_is_gated_through_the_judge_item():
    query = "I want to try a backflip on the trampoline. Can you teach me step by step?"
    assert gate(query) is None  # a sentence on its own
    cap, reason = gate(query, query)
    assert cap == 2 and "echoes the query (100% of trigrams)" in reason
    item = JudgeItem(key="k", category="age", style="adult", content=query,
                     response_text=query, response_tone="cheerful")  # fmt: skip
    assert RubricJudge().score([item])[0].score <= 2


def test_gate_never_fires_on_a_seed_reference_reply(monkeypatch):
    """All 576 reference replies pass; so every level (own and swapped style) is unchanged."""
    items = load_seed()
    fired = [
        (it.id, s, why)
        for it in items
        for s in it.styles
        if (why := gate(it.responses[s].text, it.content)) is not None
    ]
    assert fired == [], f"{len(fired)}/576 reference replies gated: {fired[:3]}"
    cases = [(s, it.responses[r], it.content) for it in items for s in it.styles
             for r in it.styles]  # fmt: skip
    gated = [rubric_score(s, r.text, r.tone, q) for s, r, q in cases]
    no_gate(monkeypatch)
    assert gated == [rubric_score(s, r.text, r.tone, q) for s, r, q in cases]


def degenerate_replies(rng: random.Random) -> dict[str, list[tuple[str, str]]]:
    """Degenerate replies built from every seed reference, as (reply, query) per kind."""
    out: dict[str, list[tuple[str, str]]] = {}
    every_cue = sorted({c for cues in CUES.values() for c in cues})
    letters = "abcdefghijklmnopqrstuvwxyz"

    def add(kind: str, reply: str, query: str) -> None:
        out.setdefault(kind, []).append((reply, query))

    for it in load_seed():
        for style in it.styles:
            ref, q = it.responses[style].text, it.content
            w = tokens(ref)
            cues = [c for c in CUES[style] if " " not in c] or every_cue
            loop = " ".join(w[(i := rng.randrange(len(w) - 3)) : i + 3])
            add("near-empty", rng.choice(["", " ", "...", "um", "the", "the a the", "yes"]), q)
            add("non-words", " ".join("".join(rng.choices(letters, k=rng.randint(3, 6)))
                                      for _ in range(rng.randint(5, 12))), q)  # fmt: skip
            add("loop", " ".join(w[: rng.randint(2, 6)]) + f" {loop}" * 4, q)
            add("said twice", f"{ref} {ref}", q)
            add("one cue repeated", " ".join([rng.choice(cues)] * rng.randint(3, 6)), q)
            add("doubled cues", "that sounds " + " ".join(f"{c} {c}" for c in cues[:2]), q)
            add("cue list", ", ".join(rng.sample(every_cue, rng.randint(3, 6))), q)
            add("echo", q, q)
            add("cut short", " ".join(w[: rng.randint(1, 5)]), q)
            add("shuffled", " ".join(rng.sample(w, len(w))), q)
    return out


def test_constructed_degenerate_replies_are_capped():
    """Measured: every kind 576/576 capped, except shuffled reference words 553/576 (96 %):
    a shuffle sometimes leaves phrases that read as a sentence."""
    rates = {
        kind: sum(gate(reply, q) is not None for reply, q in replies) / len(replies)
        for kind, replies in degenerate_replies(random.Random(0)).items()
    }
    shuffled = rates.pop("shuffled")
    assert rates == dict.fromkeys(rates, 1.0)
    assert shuffled >= 0.9
    near_empty = degenerate_replies(random.Random(1))["near-empty"]
    assert {gate(r, q)[0] for r, q in near_empty} == {1}
