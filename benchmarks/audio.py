"""Real-time factor of each embedded audio backend on the demo test split.

Run after ``paras2s shards build-demo``::

    python benchmarks/audio.py --root shards/demo --split test --limit 40

RTF = processing seconds / audio seconds (lower is faster; < 1 is faster than real time),
measured on one process, query audio for ASR / captioner / codec encode and the codec's
decode of those tokens with the reference transcript.
"""

from __future__ import annotations

import argparse
import itertools
import time

from paras2s_pl.audio.asr import PocketSphinxASR
from paras2s_pl.audio.codec import ProsodyCodec
from paras2s_pl.audio.style import ProsodyCaptioner
from paras2s_pl.data.shards import ShardDataset


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="shards/demo")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=40)
    args = ap.parse_args()
    rate = 16000
    samples = list(itertools.islice(ShardDataset(args.root, args.split, sample_rate=rate),
                                    args.limit))
    wavs = [s.user_audio for s in samples]
    texts = [s.meta.content for s in samples]
    audio_s = sum(len(w) for w in wavs) / rate

    asr, captioner, codec = PocketSphinxASR(), ProsodyCaptioner(), ProsodyCodec()
    asr.transcribe(wavs[:1], rate)  # build/load the domain LM outside the timing
    rows = []
    _, t = timed(lambda: asr.transcribe(wavs, rate))
    rows.append(("ASR pocketsphinx (domain LM)", t, audio_s))
    _, t = timed(lambda: captioner.describe(wavs, rate))
    rows.append(("captioner prosody", t, audio_s))
    tokens, t = timed(lambda: codec.encode_batch(wavs, rate))
    rows.append(("codec prosody encode", t, audio_s))
    decoded, t = timed(lambda: codec.decode_batch(tokens, texts))
    rows.append(("codec prosody decode (TTS)", t, sum(len(w) / sr for w, sr in decoded)))

    print(f"{args.root}/{args.split}: {len(samples)} utterances, {audio_s:.1f} s of audio")
    print(f"| {'backend':<30} | {'seconds':>8} | {'audio s':>8} | {'RTF':>7} |")
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 10}|{'-' * 9}|")
    for name, t, a in rows:
        print(f"| {name:<30} | {t:>8.2f} | {a:>8.1f} | {t / a:>7.4f} |")


if __name__ == "__main__":
    main()
