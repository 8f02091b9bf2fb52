"""Read a judge's answer "The reason is _; The score is _." into (score, reason).

Rules (for the answer format ``bench/guideline.md`` asks for): the FIRST "The score is N"
decides; N must be an integer 1..5, anything else ("7", "4.5", "five", no score at all) is
``None`` — a parse failure the caller retries and then counts, never drops. Case, markdown
emphasis (``**``, ``_``, backticks), a colon and trailing punctuation are tolerated: ``**The
score is 4**.``, ``The score is: **5**``, ``the score is 3/5`` all parse.

Run ``python -m paras2s_pl.bench.parse "The reason is ok; The score is 4."``.
"""

from __future__ import annotations

import re
import sys

_GAP = r"[\s*_`]+"  # whitespace and markdown emphasis between words
SCORE_RE = re.compile(rf"the{_GAP}score{_GAP}is[\s*_`:=\"']*(\d+(?:[.,]\d+)?)", re.IGNORECASE)
REASON_RE = re.compile(
    rf"the{_GAP}reason{_GAP}is[\s*_`:]*(.*?)[\s*_`;,.]*the{_GAP}score{_GAP}is",
    re.IGNORECASE | re.DOTALL,
)
REASON_ONLY_RE = re.compile(rf"the{_GAP}reason{_GAP}is[\s*_`:]*(.*)", re.IGNORECASE | re.DOTALL)
VALID_SCORES = range(1, 6)


def parse_score(answer: str | None) -> tuple[int | None, str]:
    """Return ``(score, reason)``; score is None unless the first score given is 1..5.

    The reason is the text between "The reason is" and "The score is" when both are there,
    else what follows "The reason is", else ``""``.
    """
    answer = answer or ""
    match = SCORE_RE.search(answer)
    score = None
    if match and match.group(1).isdigit() and int(match.group(1)) in VALID_SCORES:
        score = int(match.group(1))
    reason_match = REASON_RE.search(answer) or REASON_ONLY_RE.search(answer)
    reason = reason_match.group(1).strip().strip("*_` ;") if reason_match else ""
    return score, reason


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(parse_score(arg))
