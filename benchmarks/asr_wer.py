"""ASR word error rate and speed on demo shards: PocketSphinx generic vs domain LM.

Run after ``paras2s shards build-demo --out shards/demo``::

    python benchmarks/asr_wer.py --root shards/demo --split test --limit 144

Scores the query audio (``user_audio`` vs ``meta.content``) and the reply audio
(``assistant_audio`` vs ``meta.response_text``) with three language models:

* ``generic``: the LM shipped in the pocketsphinx wheel;
* ``domain``: trigram LM of every seed text — the mini world is closed, so this LM has
  seen the evaluated sentences (the embedded default's real operating point);
* ``domain-heldout``: the same builder on the seed items whose content is *not* in the
  evaluated split, i.e. new sentences over the domain's words.

Prints corpus WER (normalised text), real-time factor (decode seconds / audio seconds,
one thread) and query WER per speaker for the domain LM.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from paras2s_pl.audio.asr import PocketSphinxASR, wer
from paras2s_pl.data.seed import load_seed
from paras2s_pl.data.shards import ShardDataset

RATE = 16000


def heldout_text(contents: set[str], out: Path) -> Path:
    """Seed texts of the items whose content is not evaluated, one per line."""
    lines = []
    for item in load_seed():
        if item.content not in contents:
            lines += [item.content] + [r.text for r in item.responses.values()]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def score(asr: PocketSphinxASR, wavs: list, refs: list[str]) -> tuple[float, float, list[str]]:
    asr.transcribe(wavs[:1], RATE)  # build / load the LM and the decoder outside the timing
    t = time.perf_counter()
    hyps = asr.transcribe(wavs, RATE)
    seconds = time.perf_counter() - t
    return wer(refs, hyps), seconds / (sum(w.size for w in wavs) / RATE), hyps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="shards/demo")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="first N samples only")
    ap.add_argument("--lm-dir", default=None, help="LM cache (default: a temporary dir)")
    ap.add_argument("--models", default="generic,domain,domain-heldout")
    args = ap.parse_args()

    samples = []
    for s in ShardDataset(args.root, args.split, sample_rate=RATE):
        samples.append(s)
        if args.limit and len(samples) >= args.limit:
            break
    audio = {
        "query": ([s.user_audio for s in samples], [s.meta.content for s in samples]),
        "reply": ([s.assistant_audio for s in samples], [s.meta.response_text for s in samples]),
    }
    minutes = {k: sum(w.size for w in v[0]) / RATE / 60 for k, v in audio.items()}
    print(f"{args.root}/{args.split}: {len(samples)} samples, query {minutes['query']:.1f} min, "
          f"reply {minutes['reply']:.1f} min")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        lm_dir = args.lm_dir or tmp
        held = heldout_text({s.meta.content for s in samples}, Path(tmp) / "heldout.txt")
        models = {
            "generic": lambda: PocketSphinxASR(use_domain_lm=False),
            "domain": lambda: PocketSphinxASR(lm_dir=lm_dir),
            "domain-heldout": lambda: PocketSphinxASR(
                lm_dir=lm_dir, seed_text=False, extra_text_files=[str(held)]
            ),
        }
        print(f"| {'LM':<15} | {'audio':<6} | {'WER':>6} | {'RTF':>6} |")
        print(f"|{'-' * 17}|{'-' * 8}|{'-' * 8}|{'-' * 8}|")
        query_hyps = {}
        for name in args.models.split(","):
            asr = models[name]()
            for kind, (wavs, refs) in audio.items():
                w, rtf, hyps = score(asr, wavs, refs)
                print(f"| {name:<15} | {kind:<6} | {w:>6.3f} | {rtf:>6.3f} |", flush=True)
                if kind == "query":
                    query_hyps[name] = hyps
            if asr.domain_lm is not None:
                print(f"|   ({name}: {asr.domain_lm.vocab_size} words, "
                      f"{len(asr.domain_lm.oov)} OOV dropped)")  # fmt: skip

    for name, hyps in query_hyps.items():
        by = defaultdict(lambda: ([], []))
        for s, h in zip(samples, hyps, strict=True):
            by[s.meta.speaker][0].append(s.meta.content)
            by[s.meta.speaker][1].append(h)
        cells = "  ".join(f"{k}={wer(*v):.2f} (n={len(v[0])})" for k, v in sorted(by.items()))
        print(f"query WER by speaker, {name}: {cells}")


if __name__ == "__main__":
    main()
