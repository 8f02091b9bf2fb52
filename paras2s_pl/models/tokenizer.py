"""The mini world's text tokenizer: a small byte-level BPE, built once and cached on disk.

The tokenizer is trained with `tokenizers` on the seed queries and their reference replies
(:func:`paras2s_pl.data.seed.load_seed`) and saved as a ``PreTrainedTokenizerFast``
directory, so it loads with ``AutoTokenizer.from_pretrained(path)`` like any checkpoint's.
Its first ids are the dual-stream special tokens, named as in Kimi-Audio's tokenizer
(:data:`SPECIAL_TOKENS`; ids ``0..8`` = :data:`MINI_SPECIAL_IDS`), so
:meth:`paras2s_pl.models.dual_stream.DualStreamConfig.tiny` can use fixed special ids.
Byte-level means every string is encodable (no unknown token).

Real models use the tokenizer shipped with their checkpoint (``load_tokenizer(path)`` =
``AutoTokenizer.from_pretrained(path)``; Kimi-Audio's is a tiktoken tokenizer loaded with
``trust_remote_code=True``) and the special ids of ``DualStreamConfig.kimi_audio_7b()``.

Caching: the directory is ``$PARAS2S_CACHE/tokenizer/<hash>`` (default
``~/.cache/paras2s/tokenizer/<hash>``), the hash covering the builder version, the vocabulary
size, the special tokens and the training texts, so a repeated call only loads the files.
Training is deterministic (same texts → the same ``tokenizer.json``).

Run ``python -m paras2s_pl.models.tokenizer [--vocab-size 512] [--out DIR]`` to build it and
print its directory, size and a sample encoding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

BUILDER_VERSION = "bytebpe-v1"  # part of the cache key: bump when the recipe changes

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
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # byte alphabet + control tokens


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


def _cache_key(texts: Sequence[str], vocab_size: int) -> str:
    digest = hashlib.sha256()
    header = {"builder": BUILDER_VERSION, "vocab_size": vocab_size, "special": SPECIAL_TOKENS}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:16]


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


def build_mini_tokenizer(
    vocab_size: int = 512,
    out_dir: str | Path | None = None,
    texts: Sequence[str] | None = None,
) -> PreTrainedTokenizerFast:
    """Build (or load from the cache) the mini world's tokenizer and return it.

    Args:
        vocab_size: total ids, control tokens included (``len(tokenizer)`` may be smaller when
            the corpus has fewer merges to learn).
        out_dir: cache root (default :func:`default_cache_dir`); the tokenizer lives in
            ``<out_dir>/<hash>/`` and its path is ``tokenizer.name_or_path``.
        texts: training corpus (default :func:`mini_world_texts`).
    """
    texts = list(texts) if texts is not None else mini_world_texts()
    root = Path(out_dir) if out_dir is not None else default_cache_dir()
    directory = root / _cache_key(texts, vocab_size)
    if not (directory / "tokenizer.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tok-", dir=root))
        try:
            train_tokenizer(texts, vocab_size).save_pretrained(tmp)
            os.replace(tmp, directory)  # atomic; a concurrent builder's copy is identical
        except OSError:
            if not (directory / "tokenizer.json").exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load_tokenizer(directory)


def load_tokenizer(path: str | Path, **kwargs) -> PreTrainedTokenizerFast:
    """A saved tokenizer directory (the mini one or a checkpoint's) via ``AutoTokenizer``."""
    return AutoTokenizer.from_pretrained(str(path), **kwargs)


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
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--out", default=None, help="cache root (default ~/.cache/paras2s/tokenizer)")
    args = ap.parse_args()
    tok = build_mini_tokenizer(args.vocab_size, args.out)
    sample = "How are you feeling today?"
    print(f"{tok.name_or_path}  vocab={len(tok)}  {sample!r} -> {tok(sample)['input_ids']}")


if __name__ == "__main__":
    main()
