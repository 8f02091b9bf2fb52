"""Does a policy speak words, and do they carry cues? Word and generic shares of a bench run.

For one ``paras2s bench run`` system directory (``<out>/bench/<system>``: ``scores.jsonl``,
and ``summary.json`` naming the responses it judged) :func:`run_shares` returns

* ``text_words`` / ``asr_words``: the share of the words that are **mini-world words**
  (:func:`mini_world_words`: the lower-case words of the seed queries and reference
  replies, the vocabulary the mini policy is trained on), pooled over all responses, in
  the policy's own text stream (``responses.jsonl`` ``text``) and in the judge's ASR
  transcript (``scores.jsonl`` ``transcript``). Words are read as the rubric reads them
  (:func:`paras2s_pl.bench.coherence.tokens`, hyphenated words split). A byte-level BPE
  policy writes non-words ("Sion shks saown"). The embedded ASR decodes with a dictionary
  and LM of the mini world (:mod:`paras2s_pl.audio.asr`), so ``asr_words`` is 1.0 whatever
  was said; hence
* ``heard``: the share of the policy's text words the ASR transcript holds (bag of words,
  counts clipped, pooled): how much of what the text stream says comes through the TTS and
  the ASR to the judge.
* ``generic`` / ``generic_text``: the share of responses with **no cue word** of any label
  the rubric compares for the query (its content verdict ``generic``,
  :func:`paras2s_pl.bench.rubric.content_verdict`), on the ASR transcript (what the rubric
  judge decided) and on the policy's text.
* ``n`` (responses with a transcript) and ``words`` (mean ASR words per response).

Shares are None when there is nothing to count (e.g. a run of a system without a text
stream, or with its responses moved). :func:`format_shares` is the one-line summary the demo
prints. CLI: ``python -m paras2s_pl.bench.wordshare runs/demo/bench/sft [more run dirs]``.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from paras2s_pl.bench.coherence import tokens
from paras2s_pl.bench.rubric import content_verdict
from paras2s_pl.jsonl import read_jsonl

#: (label, key) of the shares :func:`format_shares` prints.
WORD_FIELDS = (("text", "text_words"), ("ASR", "asr_words"), ("heard", "heard"))
GENERIC_FIELDS = (("ASR", "generic"), ("text", "generic_text"))


@functools.cache
def mini_world_words() -> frozenset[str]:
    """Lower-case words of :func:`~paras2s_pl.models.tokenizer.mini_world_texts`."""
    from paras2s_pl.models.tokenizer import mini_world_texts

    return frozenset(_words(mini_world_texts()))


def _words(texts: Iterable[str]) -> list[str]:
    return [part for text in texts for word in tokens(text) for part in word.split("-") if part]


def word_share(texts: Iterable[str]) -> float | None:
    """Share of the words of ``texts`` (pooled) that are mini-world words; None: no words."""
    words = _words(texts)
    vocab = mini_world_words()
    return sum(w in vocab for w in words) / len(words) if words else None


def generic_share(rows: Iterable[tuple[str, str]]) -> float | None:
    """Share of ``(style, text)`` with the rubric's content verdict ``generic`` (no cue)."""
    verdicts = [content_verdict(style, text) == "generic" for style, text in rows]
    return sum(verdicts) / len(verdicts) if verdicts else None


def heard_share(pairs: Iterable[tuple[str, str]]) -> float | None:
    """Share of the text words of ``(text, transcript)`` pairs found in the transcript.

    Pooled over the pairs, each word's count clipped at the transcript's; None: no words.
    """
    found = total = 0
    for text, transcript in pairs:
        said, heard = Counter(_words([text])), Counter(_words([transcript]))
        found += sum((said & heard).values())
        total += sum(said.values())
    return found / total if total else None


def _policy_texts(run_dir: Path) -> dict[str, str]:
    """``key -> text`` of the responses the run judged (empty when they cannot be found)."""
    summary = run_dir / "summary.json"
    path = (
        json.loads(summary.read_text()).get("responses", {}).get("path")
        if summary.exists()
        else None
    )
    file = Path(path) / "responses.jsonl" if path else None
    if file is None or not file.exists():
        return {}
    return {r["key"]: r["text"] for r in read_jsonl(file) if r.get("text") is not None}


def run_shares(run_dir: str | Path) -> dict[str, Any]:
    """Word and generic shares of one bench system directory (see the module docstring)."""
    run_dir = Path(run_dir)
    rows = [r for r in read_jsonl(run_dir / "scores.jsonl") if r.get("transcript") is not None]
    texts = _policy_texts(run_dir)
    with_text = [r for r in rows if r["key"] in texts]
    own = [(r["style"], texts[r["key"]]) for r in with_text]
    n_words = len(_words(r["transcript"] for r in rows))
    return {
        "n": len(rows),
        "words": n_words / len(rows) if rows else None,
        "text_words": word_share(t for _, t in own),
        "asr_words": word_share(r["transcript"] for r in rows),
        "heard": heard_share((texts[r["key"]], r["transcript"]) for r in with_text),
        "generic": generic_share((r["style"], r["transcript"]) for r in rows),
        "generic_text": generic_share(own),
    }


def format_shares(name: str, shares: dict[str, Any]) -> str:
    """``sft  mini-world words: text 97 %, ASR 100 %, heard 60 % | no cue (generic): ASR …``."""

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.0f} %"

    words = ", ".join(f"{k} {pct(shares[s])}" for k, s in WORD_FIELDS)
    generic = ", ".join(f"{k} {pct(shares[s])}" for k, s in GENERIC_FIELDS)
    return f"{name:<8} mini-world words: {words} | no cue (generic): {generic} (n={shares['n']})"


def main(argv: list[str] | None = None) -> None:
    """CLI: one line per bench system directory."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="bench system directories (<out>/bench/<system>)")
    ap.add_argument("--json", action="store_true", help="print the shares as JSON")
    args = ap.parse_args(argv)
    for run in args.runs:
        shares = run_shares(run)
        print(json.dumps({"run": run, **shares}) if args.json else format_shares(run, shares))


if __name__ == "__main__":
    main()
