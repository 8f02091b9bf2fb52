"""Calibrate the prosody captioner's thresholds on the eSpeak style presets.

Synthesises every preset of ``paras2s_pl.audio.tts.STYLE_PRESETS`` with every speaker of
``labels.SPEAKERS`` (``male``/``female`` only with their own gender) on three sentences
and one multi-sentence reply, measures each utterance with
``paras2s_pl.audio.style.measure`` and prints:

1. per style, the mean of each feature for male and female speakers (the numbers quoted
   next to the thresholds in ``style.py``);
2. the child and gender score ranges (the register rule's margins);
3. the tone word the rules give each preset (counts), to see what a threshold moves.

Run: ``python benchmarks/calibrate_style.py [--workers 2]`` (~90 s on 2 idle cores).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from paras2s_pl.audio.style import (
    RATE,
    child_score,
    describe_features,
    gender_score,
    measure,
    register,
)
from paras2s_pl.audio.tts import EspeakTTS
from paras2s_pl.data import labels

TEXTS = (
    "I can't believe you finished the whole project before lunch today.",
    "My sister just told me she is moving across the country next month.",
    "Could you tell me what time the library opens on Sunday?",
    # a reply-like text: several sentences move pitch more than one (sd x1.4)
    "That sounds wonderful! I am so glad it worked out for you. Tell me more about how it "
    "went, and what you plan to do next.",
)
COLUMNS = ("f0_mean", "pitch_rel_st", "f0_sd_st", "syllable_rate", "energy_db", "tremor",
           "word_gaps_per_s", "f1_hz", "f3_hz", "f4_hz")  # fmt: skip


def _jobs() -> list[tuple[str, str, str]]:
    jobs = []
    for style in labels.TTS_STYLES:
        for speaker in labels.all_speakers():
            if style in ("male", "female") and labels.speaker_gender(speaker) != style:
                continue
            jobs += [(style, speaker, text) for text in TEXTS]
    return jobs


def _one(job: tuple[str, str, str]) -> dict:
    style, speaker, text = job
    wav, _ = EspeakTTS(RATE).synthesize(text, style, speaker)
    caption = describe_features(measure(wav))
    return dict(caption.features, style=style, speaker=speaker, tone=caption.tone,
                gender=labels.speaker_gender(speaker))  # fmt: skip


def calibrate(workers: int = 2) -> list[dict]:
    """Measure every preset × speaker × sentence; return one feature dict per utterance."""
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_one, _jobs(), chunksize=8))


def report(rows: list[dict]) -> None:
    """Print the feature table, register margins and tone counts."""
    by = defaultdict(list)
    for r in rows:
        by[r["style"], r["gender"]].append(r)
    print(f"{'style':11s}" + "".join(f"{c[:14]:>16s}" for c in COLUMNS) + "   (male / female)")
    for style in labels.TTS_STYLES:
        cells = []
        for c in COLUMNS:
            m = [np.mean([r[c] for r in by[style, g]]) if by[style, g] else np.nan
                 for g in ("male", "female")]  # fmt: skip
            cells.append(f"{m[0]:7.2f}/{m[1]:<7.2f}")
        print(f"{style:11s}" + "".join(f"{x:>16s}" for x in cells))
    child = [r for r in rows if r["style"] == "child"]
    adult = [r for r in rows if r["style"] != "child"]
    cs = child_score
    print(
        f"\nchild score: child min {min(map(cs, child)):+.2f}, adult max {max(map(cs, adult)):+.2f}"
    )
    for g in ("male", "female"):
        v = [gender_score(r) for r in adult if r["gender"] == g]
        print(f"gender score {g}: {min(v):+.2f} .. {max(v):+.2f}")
    truth = lambda r: "child" if r["style"] == "child" else r["gender"]  # noqa: E731
    wrong = [(r["style"], r["speaker"]) for r in rows if register(r) != truth(r)]
    print(f"register errors: {len(wrong)}/{len(rows)} {Counter(wrong).most_common(8)}")
    print("\ntone words per preset:")
    for style in labels.TTS_STYLES:
        counts = Counter(r["tone"] for r in rows if r["style"] == style)
        print(f"  {style:11s} " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dump", help="also write the per-utterance rows to this json file")
    args = ap.parse_args()
    rows = calibrate(args.workers)
    if args.dump:
        with open(args.dump, "w") as fh:
            json.dump(rows, fh)
    report(rows)
