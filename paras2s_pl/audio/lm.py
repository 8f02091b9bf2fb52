"""Domain language models for PocketSphinx: text -> ARPA trigram + filtered dictionary.

The generic PocketSphinx LM turns eSpeak NG speech into word salad; the mini world's
sentences are known, so a trigram LM of them (plus any extra text) makes the embedded
ASR usable. Nothing is downloaded: the pronunciations come from the ``cmudict-en-us.dict``
shipped in the pocketsphinx wheel, and words without one are dropped (counted in the log at
info level, listed at debug level and in the LM's ``info.json``).

Smoothing is interpolated absolute discounting (Ney et al. 1994), which an ARPA file
represents exactly: for a seen n-gram ``h w``

    p(w | h) = (c(h w) - D) / c(h .) + gamma(h) * p(w | h'),   gamma(h) = D * N1+(h .) / c(h .)

and for an unseen one ``p(w | h) = gamma(h) * p(w | h')``, so ``gamma(h)`` is the backoff
weight and every context's distribution sums to 1. ``D = n1 / (n1 + 2 n2)`` per order
(``n_k``: number of n-grams seen k times), clamped to [0.1, 0.9]. Unigrams are maximum
likelihood (every vocabulary word is seen, so there is no unseen mass to give out).

Run: ``python -m paras2s_pl.audio.lm --out /tmp/lm`` builds the mini-world LM and prints
its directory, sizes and OOV words. In code::

    lm = build_domain_lm(mini_world_text(), cache_dir="/tmp/lm")
    Decoder(lm=str(lm.lm_path), dict=str(lm.dict_path))
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BUILDER_VERSION = "absdisc-v1"  # part of the cache key: bump when the estimator changes
BOS, EOS = "<s>", "</s>"
NO_PROB = -99.0  # ARPA convention for <s>: it is never predicted, only conditioned on


def default_cache_dir() -> Path:
    """``$PARAS2S_CACHE/asr`` (default ``~/.cache/paras2s/asr``)."""
    return Path(os.environ.get("PARAS2S_CACHE", "~/.cache/paras2s")).expanduser() / "asr"


def default_dictionary() -> Path:
    """The CMU pronouncing dictionary shipped in the pocketsphinx wheel."""
    import pocketsphinx

    return Path(pocketsphinx.get_model_path("en-us/cmudict-en-us.dict"))


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_SEPARATORS = re.compile(r"[-\u2010-\u2015/_]+")  # hyphens, dashes, slashes split words
_NOT_WORD = re.compile(r"[^a-z0-9' ]+")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def normalize_text(s: str) -> str:
    """Lower-case words separated by single spaces: the form LMs are trained and WER scored on.

    Accents are stripped (``café`` -> ``cafe``), hyphens and dashes split words
    (``in-laws`` -> ``in laws``), other punctuation is removed, and apostrophes are kept
    only inside words. Contractions are **kept as written** (``that's`` stays ``that's``):
    expanding ``'s``/``'d`` is ambiguous (is/has, had/would), and the pronouncing
    dictionary spells contractions as one word, so the recogniser outputs them that way.
    Digits are left as digits (the mini world has none).
    """
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")
    s = _SEPARATORS.sub(" ", s.translate(_APOSTROPHES).lower())
    s = _NOT_WORD.sub(" ", s)
    return " ".join(w.strip("'") for w in s.split() if w.strip("'"))


@functools.lru_cache(maxsize=4)
def read_dictionary(path: str) -> frozenset[str]:
    """Head words of a CMU-format dictionary (``word(2)`` alternates fold into ``word``)."""
    words = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                words.add(line.split(maxsplit=1)[0].split("(", 1)[0])
    return frozenset(words)


def discount(counts: Counter) -> float:
    """Ney's absolute discount ``n1 / (n1 + 2 n2)`` for one order, clamped to [0.1, 0.9]."""
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    return min(0.9, max(0.1, n1 / (n1 + 2 * n2))) if n1 + n2 else 0.5


def count_ngrams(
    sentences: Iterable[list[str]], vocab: frozenset[str], order: int
) -> list[Counter]:
    """``counts[n-1][ngram]`` for n = 1..order over ``<s> words </s>``.

    N-grams holding an out-of-vocabulary word are not counted, so no n-gram spans the
    hole a dropped word leaves; ``<s>`` is a context only, never a counted unigram.
    """
    counts = [Counter() for _ in range(order)]
    for words in sentences:
        toks = [BOS] + [w if w in vocab else None for w in words] + [EOS]
        for n in range(1, order + 1):
            for i in range(len(toks) - n + 1):
                gram = tuple(toks[i : i + n])
                if None not in gram and gram != (BOS,):
                    counts[n - 1][gram] += 1
    return counts


def estimate(counts: list[Counter]) -> list[dict[tuple[str, ...], tuple[float, float | None]]]:
    """Interpolated absolute discounting -> ``tables[n-1][ngram] = (prob, backoff or None)``."""
    total = sum(counts[0].values())
    tables = [{g: [c / total, None] for g, c in counts[0].items()}]
    tables[0][(BOS,)] = [0.0, None]
    for n in range(2, len(counts) + 1):
        d = discount(counts[n - 1])
        ctx_total, ctx_types = Counter(), Counter()
        for g, c in counts[n - 1].items():
            ctx_total[g[:-1]] += c
            ctx_types[g[:-1]] += 1
        lower, table = tables[n - 2], {}
        for g, c in counts[n - 1].items():
            h = g[:-1]
            gamma = d * ctx_types[h] / ctx_total[h]
            table[g] = [(c - d) / ctx_total[h] + gamma * lower[g[1:]][0], None]
        for h in ctx_total:  # gamma(h) is stored on the (n-1)-gram h itself
            lower[h][1] = d * ctx_types[h] / ctx_total[h]
        tables.append(table)
    return [{g: (p, b) for g, (p, b) in t.items()} for t in tables]


def to_arpa(tables: list[dict[tuple[str, ...], tuple[float, float | None]]]) -> str:
    """ARPA text: the header's counts, then ``log10 p  ngram  [log10 backoff]`` per order."""
    lines = ["\\data\\"] + [f"ngram {n}={len(t)}" for n, t in enumerate(tables, 1)]
    for n, table in enumerate(tables, 1):
        lines += ["", f"\\{n}-grams:"]
        for gram in sorted(table):
            p, b = table[gram]
            lp = NO_PROB if gram == (BOS,) else math.log10(p)
            line = f"{lp:.6f}\t{' '.join(gram)}"
            lines.append(line if b is None else f"{line}\t{math.log10(b):.6f}")
    return "\n".join(lines + ["", "\\end\\", ""])


def read_arpa(path: str | Path) -> tuple[dict[int, int], list[dict[tuple[str, ...], tuple]]]:
    """Parse ARPA text -> (header counts, ``tables[n-1][ngram] = (log10 p, log10 bo | None)``)."""
    header: dict[int, int] = {}
    tables: list[dict] = []
    section = None
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line in ("\\data\\", "\\end\\"):
            continue
        if m := re.fullmatch(r"ngram (\d+)=(\d+)", line):
            header[int(m[1])] = int(m[2])
        elif m := re.fullmatch(r"\\(\d+)-grams:", line):
            section = int(m[1])
            tables.append({})
        else:
            parts = line.split()
            words = tuple(parts[1 : 1 + section])
            bo = float(parts[1 + section]) if len(parts) > 1 + section else None
            tables[section - 1][words] = (float(parts[0]), bo)
    return header, tables


@dataclass(frozen=True)
class DomainLM:
    """A built (or cached) LM: its files, vocabulary size and the words it had to drop."""

    directory: Path
    vocab_size: int
    ngram_counts: tuple[int, ...]
    oov: dict[str, int]  # dropped word -> occurrences in the text
    cached: bool  # True when the files were reused from an earlier build

    @property
    def lm_path(self) -> Path:
        """The ARPA file (``lm=`` of a pocketsphinx Decoder)."""
        return self.directory / "domain.arpa"

    @property
    def dict_path(self) -> Path:
        """The filtered pronouncing dictionary (``dict=``)."""
        return self.directory / "domain.dict"


def build_domain_lm(
    texts: Iterable[str],
    cache_dir: str | Path | None = None,
    dictionary: str | Path | None = None,
    order: int = 3,
    split_sentences: bool = True,
) -> DomainLM:
    """Build an ARPA LM + dictionary from ``texts`` (one sentence or passage each), cached.

    With ``split_sentences`` a passage of several sentences is counted whole and once more
    sentence by sentence: the whole gives the trigrams across sentence boundaries (a reply
    is decoded as one utterance), the parts give ``<s> w`` / ``w </s>`` at every sentence
    edge. On 40 demo test samples this cut response WER from 0.087 to 0.049 and query WER
    from 0.65 to 0.60 against passages alone.

    The cache entry is ``<cache_dir>/<hash>/`` where the hash covers the normalised text,
    the order, the dictionary file and :data:`BUILDER_VERSION`; a second call with the
    same inputs reuses the files (``DomainLM.cached``). Files are written to a temporary
    directory and renamed into place, so concurrent builders never see half a model.

    Raises:
        ValueError: when no text has a word in the dictionary.
    """
    dictionary = Path(dictionary or default_dictionary())
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    texts = list(texts)
    if split_sentences:
        texts += [
            p for t in texts if len(parts := _SENTENCE_END.split(t.strip())) > 1 for p in parts
        ]
    sentences = [s for s in (normalize_text(t) for t in texts) if s]
    key = hashlib.sha256(
        "\n".join([BUILDER_VERSION, str(order), str(dictionary.resolve()),
                   str(dictionary.stat().st_size), *sentences]).encode()
    ).hexdigest()[:16]  # fmt: skip
    directory = cache_dir / key
    info_path = directory / "info.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        return DomainLM(
            directory, info["vocab_size"], tuple(info["ngram_counts"]), info["oov"], True
        )

    known = read_dictionary(str(dictionary))
    words = Counter(w for s in sentences for w in s.split())
    vocab = frozenset(w for w in words if w in known)
    oov = {w: c for w, c in sorted(words.items()) if w not in known}
    if not vocab:
        raise ValueError(
            f"no word of the {len(sentences)} LM text(s) is in {dictionary}; "
            "pass English text (use_domain_lm=False to use the generic model)"
        )
    if oov:  # expected (names, rare words): a count, not a list, unless debugging
        log.info("domain LM: %d word(s) without a pronunciation in %s left out (listed in "
                 "%s/info.json)", len(oov), dictionary.name, directory)  # fmt: skip
        log.debug("domain LM: words left out: %s", " ".join(oov))
    tables = estimate(count_ngrams((s.split() for s in sentences), vocab, order))

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    (tmp / "domain.arpa").write_text(to_arpa(tables), encoding="utf-8")
    with open(dictionary, encoding="utf-8") as src, open(tmp / "domain.dict", "w") as dst:
        dst.writelines(ln for ln in src if ln.split(maxsplit=1)[0].split("(", 1)[0] in vocab)
    counts = tuple(len(t) for t in tables)
    info = {"vocab_size": len(vocab), "ngram_counts": counts, "oov": oov,
            "sentences": len(sentences), "builder": BUILDER_VERSION, "order": order}  # fmt: skip
    (tmp / "info.json").write_text(json.dumps(info, indent=1))
    try:
        os.replace(tmp, directory)
    except OSError:  # another process finished the same build first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("domain LM: %d words, n-grams %s -> %s", len(vocab), counts, directory)
    return DomainLM(directory, len(vocab), counts, oov, False)


def mini_world_text(extra_files: Iterable[str | Path] = (), seed: bool = True) -> list[str]:
    """Seed contents and reference replies (unless ``seed=False``) + lines of ``extra_files``."""
    from paras2s_pl.data.seed import load_seed

    texts = []
    for item in load_seed() if seed else []:
        texts.append(item.content)
        texts.extend(r.text for r in item.responses.values())
    for path in extra_files:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"extra LM text file {path} does not exist (extra_text_files)")
        texts.extend(ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip())
    return texts


def main(argv: list[str] | None = None) -> None:
    """Build the mini-world LM and print where it is."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", default=None, help="cache directory (default ~/.cache/paras2s/asr)"
    )
    parser.add_argument(
        "--extra", nargs="*", default=[], help="extra text files, one passage a line"
    )
    args = parser.parse_args(argv)
    lm = build_domain_lm(mini_world_text(args.extra), cache_dir=args.out)
    print(f"{lm.directory}  vocab={lm.vocab_size}  ngrams={lm.ngram_counts}  cached={lm.cached}")
    print(f"OOV dropped ({len(lm.oov)}): {' '.join(lm.oov) or '-'}")


if __name__ == "__main__":
    main()
