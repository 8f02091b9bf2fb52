"""The mini world's text tokenizer, built once and cached on disk: word-level (default) or BPE.

Two kinds, both saved as a ``PreTrainedTokenizerFast`` directory (so they load with
``AutoTokenizer.from_pretrained(path)`` like any checkpoint's) and both starting with the
dual-stream special tokens, named as in Kimi-Audio's tokenizer (:data:`SPECIAL_TOKENS`; ids
``0..8`` = :data:`MINI_SPECIAL_IDS`), so :meth:`paras2s_pl.models.dual_stream.DualStreamConfig.tiny`
can use fixed special ids:

* ``word`` (the default of :func:`build_mini_tokenizer`): one id per word of the mini world
  (``models.WordLevel``). Its vocabulary is every piece of :func:`mini_world_texts` (the seed
  queries and their reference replies), case kept, plus each piece's lower-case form (ASR
  transcripts are lower case), the digits (the reward model scores with "1".."5"; numbers
  are spelt digit by digit), ASCII punctuation and a lone space marker; id 9 is the unknown
  token :data:`UNK_TOKEN`, then the pieces by corpus frequency: 3,320 ids. Pieces
  (:func:`word_pre_tokenizer`): a space becomes a word-initial ``▁`` (Metaspace, the first
  word marked too) and every punctuation mark is its own piece, except an apostrophe between
  two word characters ("I'm", "that's" are one word); the Metaspace decoder undoes it, so
  ``decode(encode(text)) == text`` for every mini-world text (``tests/test_tokenizer.py``).
  Case is kept rather than lower-cased by a normaliser: the round-trip stays exact (the TTS
  reads the policy's text, the judge's ASR hears it) for ~270 capitalised forms. A word
  outside the vocabulary encodes to ``<|unk|>`` (dropped by ``skip_special_tokens=True``);
  the mini policy is trained on in-vocabulary text only, so it writes mini-world words and
  punctuation. Cue words of the rubric judge that the mini world never says ("brilliant",
  "awful": 30 of its 349) are not added: no training text would teach them.
* ``bpe``: a 512-id byte-level BPE trained on the same texts (the default until issue 13:
  its sampled text was mostly non-words, "Sion shks saown que dind"); 2.2 times as many ids
  per mini-world text. Every string is encodable (no unknown token).

Measured (issue 13 item 3, 2 shared CPU cores): the demo's SFT stage (``paras2s fit --config
configs/mini/sft.yaml --data.root shards/demo --trainer.max_steps 300
--trainer.val_check_interval 150``; BPE: ``--data.init_args.tokenizer mini:bpe``, here the
demo's own BPE export), each export answering the 144 test queries (``paras2s bench respond
--system sft --policy <export> --query_transcript shard --sampling '{"max_new_tokens": 200}'``,
greedy, or at temperature 1 with ``"audio_temperature": 1.0, "audio_top_k": 0,
"text_temperature": 1.0, "text_top_k": 0`` as GRPO's rollouts), judged by ``paras2s bench run``
(rubric); shares from :func:`paras2s_pl.bench.wordshare.run_shares`:

================ ========== ========= ======== ======== ========= ==========
policy           mini-world text said no cue   no cue   Overall   Overall 32
                 words in   heard by  (ASR,    (policy  (144      (demo
                 its text   the ASR   judged)  text)    queries)  bench set)
================ ========== ========= ======== ======== ========= ==========
BPE, greedy      75 %       50 %      31 %     31 %     2.264     2.442
word, greedy     100 %      67 %      20 %     6 %      2.264     2.508
BPE, temp. 1     39 %       16 %      35 %     69 %     2.507     2.379
word, temp. 1    100 %      46 %      50 %     57 %     2.444     2.483
================ ========== ========= ======== ======== ========= ==========

Word − BPE Overall, paired bootstrap over the 72 contrasting pairs: greedy +0.000
[-0.181, +0.174], temperature 1 -0.063 [-0.340, +0.229]: no difference. The ASR's transcripts
are 100 % mini-world words for every policy (it decodes with the mini world's dictionary and
LM), and it turns BPE non-words into frequent, cue-rich mini-world words, so its no-cue share
flatters the BPE at temperature 1. Words fix what is said, not yet what the judge hears:
the word policy's greedy text carries the query label's cues in 101 of 144 replies (BPE 74),
its transcripts in 70 (BPE 73), the rest lost by the ASR (a third of the words) or turned
into cues of the other side (40 transcripts vs 31 texts; BPE 19); and its greedy audio runs
to ``max_new_tokens`` in 126 of 144 replies (BPE 50; at temperature 1: 5 vs 1). SFT validation
(32 test queries) at step 300: BPE val/loss 6.29 (text 3.86 per id, audio 2.43), word 8.17
(text 5.70 per id, audio 2.47); per reply the text costs ~242 nats with the BPE (2.1 times
as many ids) and ~172 with the word kind. Model 1.48M → 2.56M parameters (the heads' logits
span 776 → 3,584 shared ids): a training step of 8 x 320 positions 2.07 → 3.35 s (one
thread, loaded machine); the word SFT took 579 s wall (490 s for the 300 steps), the demo's
BPE one 723 s (639 s, beside the demo's side lane).

Real models use the tokenizer shipped with their checkpoint (``load_tokenizer(path)`` =
``AutoTokenizer.from_pretrained(path)``; Kimi-Audio's is a tiktoken tokenizer loaded with
``trust_remote_code=True``) and the special ids of ``DualStreamConfig.kimi_audio_7b()``. An
exported policy keeps the tokenizer it was trained with beside its weights, and every loader
(``load_policy``, the reward model's ``init_from``, GRPO's ``init_from``) uses that one, so
exports made with the BPE keep loading with the BPE. ``load_tokenizer("mini:bpe")`` (or
``"mini:word"``) builds a mini kind wherever a tokenizer path is accepted, e.g.
``paras2s fit --config configs/mini/sft.yaml --data.init_args.tokenizer mini:bpe``.

Caching: the directory is ``$PARAS2S_CACHE/tokenizer/<hash>`` (default
``~/.cache/paras2s/tokenizer/<hash>``), the hash covering the builder version (one per kind,
:data:`BUILDER_VERSIONS`), the vocabulary size (BPE), the special tokens and the training
texts, so a repeated call only loads the files. Building is deterministic (same texts → the
same ``tokenizer.json``).

Run ``python -m paras2s_pl.models.tokenizer [--kind word|bpe] [--vocab-size 512] [--out DIR]``
to build one and print its directory, size and a sample encoding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import string
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

KINDS = ("word", "bpe")
DEFAULT_KIND = "word"  # what build_mini_tokenizer() builds
#: Part of the cache key, per kind: bump one when its recipe changes.
BUILDER_VERSIONS: dict[str, str] = {"bpe": "bytebpe-v1", "word": "wordlevel-v1"}
BUILDER_VERSION = BUILDER_VERSIONS[DEFAULT_KIND]
#: ``load_tokenizer(MINI_PREFIX + kind)`` builds the mini tokenizer of that kind.
MINI_PREFIX = "mini:"

# Dual-stream control tokens, in id order (Kimi-Audio's names). Roles: see DualStreamConfig.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|im_kimia_text_blank|>",  # 0 idle stream / padding
    "<|im_kimia_text_eos|>",  # 1 end of the response text
    "<|im_kimia_user_msg_start|>",  # 2
    "<|im_kimia_assistant_msg_start|>",  # 3
    "<|im_media_begin|>",  # 4
    "<|im_media_end|>",  # 5
    "<|im_msg_end|>",  # 6 end of a message; also ends the response audio
    "<|im_kimia_speech_ct_id|>",  # 7 "a text answer follows"
    "<|im_kimia_speech_ctd_id|>",  # 8 "a speech answer follows"
)
# DualStreamConfig field name -> id in the mini tokenizer.
MINI_SPECIAL_IDS: dict[str, int] = {
    "text_blank_id": 0,
    "text_eos_id": 1,
    "user_start_id": 2,
    "assistant_start_id": 3,
    "media_begin_id": 4,
    "media_end_id": 5,
    "msg_end_id": 6,
    "speech_ct_id": 7,
    "speech_ctd_id": 8,
}
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # byte alphabet + control tokens (BPE)

#: The word kind's unknown token, right after the control tokens.
UNK_TOKEN = "<|unk|>"
MINI_UNK_ID = len(SPECIAL_TOKENS)
#: Word-initial marker of the word kind (a space before the word; Metaspace's default).
SPACE_MARK = "\u2581"
#: Pieces split off inside a Metaspace piece: any non-word character except the marker, each
#: digit but one right after the marker (numbers are spelt digit by digit: "▁4" "2", so every
#: number encodes), and an apostrophe unless it sits between two word characters ("I'm").
PUNCT_SPLIT = r"[^\w\u2581']|(?<!\u2581)\d|(?<!\w)'|'(?!\w)"
#: Always in the word vocabulary: the lone marker (a second space), the digits (with and
#: without the marker; the reward model's score characters) and ASCII punctuation.
ALWAYS_PIECES: tuple[str, ...] = (
    SPACE_MARK,
    *string.digits,
    *(SPACE_MARK + d for d in string.digits),
    *string.punctuation,
)


def default_cache_dir() -> Path:
    """``$PARAS2S_CACHE/tokenizer`` (default ``~/.cache/paras2s/tokenizer``)."""
    return Path(os.environ.get("PARAS2S_CACHE", "~/.cache/paras2s")).expanduser() / "tokenizer"


def mini_world_texts() -> list[str]:
    """Seed query contents and reference replies, in file order (the training corpus)."""
    from paras2s_pl.data.seed import load_seed

    items = load_seed()
    texts = [item.content for item in items]
    texts += [item.responses[style].text for item in items for style in item.styles]
    return texts


def _cache_key(texts: Sequence[str], vocab_size: int | None, kind: str = "bpe") -> str:
    digest = hashlib.sha256()
    if kind == "bpe":  # the header of the BPE-only builder: its cached directories stay valid
        header = {"builder": BUILDER_VERSIONS["bpe"], "vocab_size": vocab_size,
                  "special": SPECIAL_TOKENS}  # fmt: skip
    else:
        header = {"builder": BUILDER_VERSIONS[kind], "kind": kind, "special": SPECIAL_TOKENS,
                  "unk": UNK_TOKEN, "always": ALWAYS_PIECES}  # fmt: skip
    digest.update(json.dumps(header, sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:16]


def _wrap(core) -> PreTrainedTokenizerFast:
    """A ``tokenizers.Tokenizer`` as a transformers tokenizer with the control tokens."""
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=SPECIAL_TOKENS[0],
        eos_token=SPECIAL_TOKENS[1],
        additional_special_tokens=list(SPECIAL_TOKENS[2:]),
        **({"unk_token": UNK_TOKEN} if core.token_to_id(UNK_TOKEN) is not None else {}),
        clean_up_tokenization_spaces=False,  # decode(encode(x)) == x, no " ." rewriting
    )


def train_tokenizer(texts: Sequence[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on ``texts`` (no caching; see :func:`build_mini_tokenizer`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < MIN_VOCAB:
        raise ValueError(
            f"vocab_size={vocab_size} is below the byte alphabet + control tokens ({MIN_VOCAB}); "
            f"pass vocab_size >= {MIN_VOCAB}"
        )
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),  # first, so their ids are 0..8
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=SPECIAL_TOKENS[0],
        eos_token=SPECIAL_TOKENS[1],
        additional_special_tokens=list(SPECIAL_TOKENS[2:]),
    )


def word_pre_tokenizer():
    """The word kind's pre-tokenizer: Metaspace words, then punctuation split off (isolated)."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=SPACE_MARK, prepend_scheme="first", split=True),
        pre_tokenizers.Split(Regex(PUNCT_SPLIT), behavior="isolated"),
    ])  # fmt: skip


def word_vocabulary(texts: Sequence[str]) -> list[str]:
    """The word kind's pieces after the control tokens and ``<|unk|>``, in id order.

    The pieces of ``texts`` by frequency (ties alphabetically), then the lower-case forms
    not yet present, then :data:`ALWAYS_PIECES` not yet present.
    """
    pre = word_pre_tokenizer()
    counts = Counter(piece for text in texts for piece, _ in pre.pre_tokenize_str(text))
    reserved = {*SPECIAL_TOKENS, UNK_TOKEN}
    pieces = [p for p, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    pieces += sorted({p.lower() for p in pieces} - set(pieces))
    pieces += [p for p in ALWAYS_PIECES if p not in set(pieces)]
    return [p for p in pieces if p not in reserved]


def train_word_tokenizer(texts: Sequence[str]) -> PreTrainedTokenizerFast:
    """The word-level tokenizer of ``texts`` (no caching; see :func:`build_mini_tokenizer`)."""
    from tokenizers import Tokenizer, decoders, models

    tokens = [*SPECIAL_TOKENS, UNK_TOKEN, *word_vocabulary(texts)]
    core = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=UNK_TOKEN))
    core.pre_tokenizer = word_pre_tokenizer()
    core.decoder = decoders.Metaspace(replacement=SPACE_MARK, prepend_scheme="first", split=True)
    return _wrap(core)


def build_mini_tokenizer(
    vocab_size: int | None = None,
    out_dir: str | Path | None = None,
    texts: Sequence[str] | None = None,
    kind: str = DEFAULT_KIND,
) -> PreTrainedTokenizerFast:
    """Build (or load from the cache) the mini world's tokenizer and return it.

    Args:
        vocab_size: BPE only: total ids, control tokens included (default 512;
            ``len(tokenizer)`` may be smaller when the corpus has fewer merges to learn). The
            word kind's size is its vocabulary's; passing one raises ``ValueError``.
        out_dir: cache root (default :func:`default_cache_dir`); the tokenizer lives in
            ``<out_dir>/<hash>/`` and its path is ``tokenizer.name_or_path``.
        texts: training corpus (default :func:`mini_world_texts`).
        kind: ``word`` (default: one id per mini-world word) or ``bpe`` (byte-level BPE).
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; choose one of {list(KINDS)}")
    if kind == "word" and vocab_size is not None:
        raise ValueError(
            f"vocab_size={vocab_size} applies to kind='bpe' only; the word tokenizer has one "
            "id per word of its texts"
        )
    if kind == "bpe" and vocab_size is None:
        vocab_size = 512
    texts = list(texts) if texts is not None else mini_world_texts()
    root = Path(out_dir) if out_dir is not None else default_cache_dir()
    directory = root / _cache_key(texts, vocab_size, kind)
    if not (directory / "tokenizer.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tok-", dir=root))
        try:
            made = (
                train_tokenizer(texts, vocab_size) if kind == "bpe" else train_word_tokenizer(texts)
            )
            made.save_pretrained(tmp)
            os.replace(tmp, directory)  # atomic; a concurrent builder's copy is identical
        except OSError:
            if not (directory / "tokenizer.json").exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load_tokenizer(directory)


def load_tokenizer(path: str | Path, **kwargs) -> PreTrainedTokenizerFast:
    """A saved tokenizer directory (the mini one or a checkpoint's) via ``AutoTokenizer``.

    ``"mini:word"`` / ``"mini:bpe"`` (:data:`MINI_PREFIX` + kind) build the mini tokenizer of
    that kind instead (``kwargs`` are then unused).
    """
    if isinstance(path, str) and path.startswith(MINI_PREFIX):
        return build_mini_tokenizer(kind=path[len(MINI_PREFIX) :])
    return AutoTokenizer.from_pretrained(str(path), **kwargs)


def mini_tokenizer_for(text_vocab_size: int) -> PreTrainedTokenizerFast:
    """The mini kind with ``text_vocab_size`` ids (word, else BPE), else the default kind.

    For a model saved without its tokenizer: exports keep theirs (a 512-id model from before
    the word tokenizer gets the BPE it was trained with).
    """
    for kind in KINDS:
        tok = build_mini_tokenizer(kind=kind)
        if len(tok) == text_vocab_size:
            return tok
    return build_mini_tokenizer()


def special_ids(tokenizer) -> dict[str, int]:
    """DualStreamConfig special-id fields read from a tokenizer holding :data:`SPECIAL_TOKENS`."""
    ids = {}
    for field, token in zip(MINI_SPECIAL_IDS, SPECIAL_TOKENS, strict=True):
        idx = tokenizer.convert_tokens_to_ids(token)
        if idx is None or idx == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no token {token} ({field})")
        ids[field] = int(idx)
    return ids


def main() -> None:
    """CLI: build the mini tokenizer and print where it is."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=KINDS, default=DEFAULT_KIND)
    ap.add_argument("--vocab-size", type=int, default=None, help="BPE only (default 512)")
    ap.add_argument("--out", default=None, help="cache root (default ~/.cache/paras2s/tokenizer)")
    args = ap.parse_args()
    tok = build_mini_tokenizer(args.vocab_size, args.out, kind=args.kind)
    sample = "How are you feeling today?"
    ids = tok(sample)["input_ids"]
    print(f"{tok.name_or_path}  kind={args.kind}  vocab={len(tok)}  {sample!r} -> {ids}")


if __name__ == "__main__":
    main()
