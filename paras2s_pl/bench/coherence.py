"""The rubric judge's coherence gate: a reply that says nothing cannot score above 2.

The rubric (:mod:`paras2s_pl.bench.rubric`) grades cue words and tone, so without a gate a
policy earned 4-5 with cue spam ("sorry sorry sorry sorry" to a sad user) or with ASR word
loops holding one cue ("a slower the loans that's a lot this loans loans and a blow and a
blow and a blow"), and an empty reply scored 3; the guideline's judge would give each a 1.
:func:`gate` measures a transcript (:func:`measure`) and returns a cap with a reason naming
every failed check, or ``None`` for a coherent reply. Thresholds, and the worst value
among the 576 seed reference replies (``paras2s_pl/data/seed``), none of which is gated:

==================== ================================================= === ============
check                fires when                                        cap worst ref
==================== ================================================= === ============
near-empty           < 2 distinct content words                        1   4
non-words            < 80 % of the words in the dictionary             2   100 % (82 %)
too short            < 6 real words                                    2   11
repeated trigrams    > 20 % of trigrams repeat an earlier one          2   3.8 %
doubled words        >= 2 words said twice in a row                    2   0
one word dominates   a content word >= 4 times and >= 1/3 of them      2   3 times
cue-word list        >= 60 % of the words inside cue phrases           2   46 %
echo                 >= 50 % of the trigrams copied from the query     2   17 %
broken phrases       >= 2 determiner slips ("the a", "a and", final a) 2   0
chained fragments    > 20 % of the words are "and"/"or"                2   12.5 %
no sentence          context support < -0.15 (below)                   2   -0.06
==================== ================================================= === ============

*Words*: lower case, punctuation dropped (as the rubric reads them). *Real words*: the CMU
dictionary shipped with pocketsphinx (126k words), the seed text and
:data:`FUNCTION_WORDS`; with the dictionary alone the worst reference keeps 82 % ("Rent a
men's yukata ... kaku obi belt and wooden geta sandals"), so new replies of the mini world
pass too. *Content words*: real words that are not function words. *Context support*: the
mean log10 P(w | two previous words) / P(w) under pocketsphinx's general English trigram
LM (``en-us.lm.bin``), unknown words skipped; word rarity cancels, only how well each word
follows its context remains. References: median +0.56, worst -0.06; the same words
shuffled: median -0.49.

Why these checks and not others:

* The embedded ASR decodes with a dictionary of mini-world words, so its transcripts are
  real words whatever the audio; the non-word check only catches text that did not pass
  through it (a policy's own text, another ASR). Non-word salad ("Sion shks saown que
  dind qelen fobir": 1 real word of 7) is near-empty as well.
* What the ASR makes of a weak policy's audio is loops and stutters (up to 64 % repeated
  trigrams, "really" 23 times in 72 words), fragments glued by "and" (up to 27 % of the
  words) and determiner slips ("the a the", "a a big"), which sentences never produce.
* Relation to the query by shared content words is **not** a check: 166 of the 576
  references (29 %) share no content word with their query ("What a big adventure for
  her!" to "My sister just told me she is moving across the country"). Copying the query
  instead of answering it is one.
* Function-word share would separate cue lists from sentences, but references go down to
  18 % ("Dark jeans, a knit polo or crewneck sweater, and clean white sneakers"); the share
  of words inside cue phrases and the context support catch cue lists instead.

Measured (``tests/test_rubric.py`` builds them from the 576 references): every empty or
near-empty reply, non-word salad, 2-6 words of a reply then a 3-word loop said 4 times,
reply said twice, one cue repeated, doubled cues in a frame, list of 3-6 cue words, echo
of the query and reply cut to 1-5 words is capped; of the references' words shuffled,
96 % (553). On the bench transcripts of two tiny and one full demo run: no topline (36)
or baseline (29) transcript is gated; 27 of 38 SFT, 20 of 39 GRPO and 30 of 38 base
transcripts are. The rest are salad of real words whose trigrams are locally plausible
(the ASR chose them with a mini-world LM: "sorry that sounds like that lanes and a planned
and some leading a blouse and amount seeing it needs"); no check here separates those
from references without gating some references, so they keep their level.

Run ``python -m paras2s_pl.bench.coherence "some reply" ["the query"]`` to see the
measures and the verdict for one text.
"""

from __future__ import annotations

import bisect
import functools
import re
import sys
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise

from paras2s_pl.bench.rubric_cues import CUES

#: Closed-class English words: a sentence needs them, a cue-word list lacks them, and they
#: do not count as content (a reply of only "the a the" says nothing).
FUNCTION_WORDS = frozenset(
    """
    a an the this that these those my your his her its our their me you him us them i we he
    she it they mine yours ours theirs myself yourself itself ourselves themselves and or but
    so if then than as because while when where what which who whom whose how why whether to
    of in on at for with by from about into onto over under up down out off through after
    before between around across along against during without within until upon is am are
    was were be been being do does did done have has had having will would can could should
    may might must shall not no nor too very just also only still even more most much many
    some any all each every both few other such own same there here now once again ever yet
    i'm you're we're they're he's she's it's that's there's here's what's let's don't doesn't
    didn't can't won't isn't aren't wasn't weren't haven't hasn't couldn't wouldn't shouldn't
    i'll you'll we'll they'll it'll i've you've we've they've i'd you'd we'd they'd
    """.split()
)
#: Words that open a noun phrase: in a sentence a noun, adjective or number follows them.
DETERMINERS = frozenset({"a", "an", "the", "my", "your", "our", "their", "its"})
#: Function words that cannot follow a determiner ("the a", "a and", "the you").
NOT_AFTER_DETERMINER = DETERMINERS | frozenset(
    """
    is am are was were be been to of in on at for with by from and or but so if than as i you
    he she it we they me him us them i'm you're it's that's don't didn't doesn't will would
    should did do does not what where when how why who which there here
    """.split()
)

MIN_CONTENT_WORDS = 2
MIN_REAL_SHARE = 0.8
MIN_WORDS = 6
MAX_REPEATED_TRIGRAMS = 0.2
MAX_DOUBLED = 1
DOMINANT_COUNT, DOMINANT_SHARE = 4, 1 / 3
MAX_CUE_SHARE = 0.6
MAX_ECHO = 0.5
MAX_BROKEN = 1
MAX_CHAIN_SHARE = 0.2
MIN_CONTEXT_SUPPORT = -0.15


@dataclass(frozen=True)
class Coherence:
    """What :func:`measure` finds in one reply (shares in [0, 1])."""

    words: int
    real_share: float
    real_words: int
    content_words: int  # distinct real content words
    repeated_trigrams: float
    doubled: tuple[str, ...]  # words said twice in a row, in order
    top_word: str  # the most frequent content word ("" when none)
    top_count: int
    top_share: float  # of all content-word tokens
    cue_share: float
    echo: float  # share of the reply's trigrams found in the query
    broken: tuple[str, ...]  # determiner slips, e.g. "the a", "... a$"
    chain_share: float  # share of "and"/"or"
    context_support: float | None  # mean log10 P(w | 2 previous) / P(w); None: no LM


def tokens(text: str) -> list[str]:
    """Lower-case words, apostrophes kept, hyphens kept inside words (as the rubric reads)."""
    text = text.lower().replace("\u2019", "'")
    return re.sub(r"[^a-z0-9' -]+", " ", text).replace(" - ", " ").split()


@functools.cache
def vocabulary() -> frozenset[str]:
    """Real words: pocketsphinx's CMU dictionary, the seed text and :data:`FUNCTION_WORDS`."""
    from paras2s_pl.audio.lm import default_dictionary, read_dictionary
    from paras2s_pl.data.seed import load_seed

    words = set(FUNCTION_WORDS)
    for item in load_seed():
        for text in (item.content, *(r.text for r in item.responses.values())):
            words.update(w for t in tokens(text) for w in t.split("-"))
    try:
        words |= read_dictionary(str(default_dictionary()))
    except (ImportError, OSError):  # the dictionary only widens the net; the seed suffices
        pass
    return frozenset(words)


def is_real(word: str) -> bool:
    """A dictionary word (each part of a hyphenated one) or a number."""
    vocab = vocabulary()
    return all(p in vocab or p.isdigit() for p in word.split("-") if p)


@functools.cache
def _cue_pattern() -> re.Pattern[str]:
    """Every cue phrase, word-initial, in a lookahead so overlapping matches are all found."""
    phrases = sorted({c for cues in CUES.values() for c in cues}, key=len, reverse=True)
    return re.compile(r"(?<![a-z'])(?=(" + "|".join(map(re.escape, phrases)) + "))")


def cue_share(words: list[str]) -> float:
    """Share of ``words`` inside a cue phrase of any label (matched as the rubric matches)."""
    if not words:
        return 0.0
    text = " ".join(words)
    starts = [m.start() for m in re.finditer(r"\S+", text)]
    covered: set[int] = set()
    for m in _cue_pattern().finditer(text):
        first = bisect.bisect_right(starts, m.start()) - 1
        last = bisect.bisect_right(starts, m.start() + len(m.group(1)) - 1) - 1
        covered.update(range(first, last + 1))
    return len(covered) / len(words)


@functools.cache
def _english_lm() -> tuple | None:
    """The general English trigram LM of pocketsphinx and its LogMath (None when unavailable)."""
    try:
        import pocketsphinx

        logmath = pocketsphinx.LogMath()
        config = pocketsphinx.Config(loglevel="FATAL")
        path = pocketsphinx.get_model_path("en-us/en-us.lm.bin")
        return pocketsphinx.NGramModel(config, logmath, path), logmath
    except (ImportError, OSError, RuntimeError, ValueError):
        return None


def context_support(words: list[str]) -> float | None:
    """Mean log10 of P(w | two previous words) / P(w) under a general English LM.

    Positive when each word is likelier after its context than alone, as in a sentence;
    near or below 0 for words that do not follow each other. Words the LM does not know
    are skipped (they would only measure rarity). None without the LM or a known word.
    """
    lm = _english_lm()
    if lm is None:
        return None
    model, logmath = lm
    unknown = model.prob(["<unk>"])
    history, gains = ["<s>"], []
    for w in [*words, "</s>"]:
        alone = model.prob([w])
        if alone != unknown:
            given = model.prob([w, *history[::-1][:2]])  # the word, then its history reversed
            gains.append(logmath.log_to_log10(given) - logmath.log_to_log10(alone))
        history.append(w)
    return sum(gains) / len(gains) if len(gains) > 1 else None


def _trigrams(words: list[str]) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + 3]) for i in range(len(words) - 2)]


def measure(text: str, query: str = "") -> Coherence:
    """The gate's measures of a reply ``text`` to a query whose content is ``query``."""
    words = tokens(text)
    real = [w for w in words if is_real(w)]
    content = [w for w in real if w not in FUNCTION_WORDS]
    tri = _trigrams(words)
    repeated = sum(t in tri[:i] for i, t in enumerate(tri))
    top_word, top_count = Counter(content).most_common(1)[0] if content else ("", 0)
    query_tri = set(_trigrams(tokens(query)))
    echo = sum(t in query_tri for t in tri) / len(tri) if tri and query_tri else 0.0
    pairs = list(pairwise(words))
    broken = [f"{a} {b}" for a, b in pairs if a in DETERMINERS and b in NOT_AFTER_DETERMINER]
    if words and words[-1] in DETERMINERS:
        broken.append(f"ends in {words[-1]!r}")
    return Coherence(
        words=len(words),
        real_share=len(real) / len(words) if words else 0.0,
        real_words=len(real),
        content_words=len(set(content)),
        repeated_trigrams=repeated / len(tri) if tri else 0.0,
        doubled=tuple(b for a, b in pairs if a == b),
        top_word=top_word,
        top_count=top_count,
        top_share=top_count / len(content) if content else 0.0,
        cue_share=cue_share(words),
        echo=echo,
        broken=tuple(broken),
        chain_share=sum(w in ("and", "or") for w in words) / len(words) if words else 0.0,
        context_support=context_support(words),
    )


def failures(m: Coherence) -> list[str]:
    """Each failed check as a short phrase (empty: coherent); near-empty alone when it fails."""
    if not m.words:
        return ["empty reply"]
    if m.content_words < MIN_CONTENT_WORDS:
        return [f"near-empty: {m.content_words} distinct content word(s) in {m.words} words"]
    out = []
    if m.real_share < MIN_REAL_SHARE:
        out.append(f"{m.real_share:.0%} real words")
    if m.real_words < MIN_WORDS:
        out.append(f"{m.real_words} real words")
    if m.repeated_trigrams > MAX_REPEATED_TRIGRAMS:
        out.append(f"{m.repeated_trigrams:.0%} repeated trigrams")
    if len(m.doubled) > MAX_DOUBLED:
        out.append(f"{len(m.doubled)} doubled words ({', '.join(m.doubled[:3])})")
    if m.top_count >= DOMINANT_COUNT and m.top_share >= DOMINANT_SHARE:
        out.append(f"{m.top_word!r} is {m.top_count} of the content words")
    if m.cue_share >= MAX_CUE_SHARE:
        out.append(f"cue-word list ({m.cue_share:.0%} cue words)")
    if m.echo >= MAX_ECHO:
        out.append(f"echoes the query ({m.echo:.0%} of trigrams)")
    if len(m.broken) > MAX_BROKEN:
        out.append(f"broken phrases ({', '.join(m.broken[:3])})")
    if m.chain_share > MAX_CHAIN_SHARE:
        out.append(f"fragments chained by and/or ({m.chain_share:.0%} of words)")
    if m.context_support is not None and m.context_support < MIN_CONTEXT_SUPPORT:
        out.append(f"words do not follow each other (context support {m.context_support:+.2f})")
    return out


def gate(text: str, query: str = "") -> tuple[int, str] | None:
    """``(cap, reason)`` for an incoherent reply, ``None`` for a coherent one."""
    m = measure(text, query)
    failed = failures(m)
    if not failed:
        return None
    cap = 1 if m.content_words < MIN_CONTENT_WORDS else 2
    return cap, "incoherent: " + "; ".join(failed)


if __name__ == "__main__":
    reply, query = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")
    print(measure(reply, query))
    print(gate(reply, query) or "coherent")
