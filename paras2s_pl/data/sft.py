"""SFT data: demo shards → codec tokens + text tokens → dual-stream examples and batches.

:class:`SFTDataModule` reads a ``demo`` shard set (query audio, response audio,
``content``, ``response_text``), encodes both audio files with the codec and the response
text (and, with ``query_transcript``, the query transcript) with the tokenizer **once**
in :meth:`~SFTDataModule.setup`, keeps the tokens in memory, and lays each turn out with
:func:`paras2s_pl.models.layout.build_example` (Kimi-Audio's dual-stream layout).

**Batch keys** are the layout's (:func:`paras2s_pl.models.layout.collate`), because one
position holds both roles (the user's query then the assistant's response) on two
streams: ``audio_ids``, ``text_ids``, ``audio_labels``, ``text_labels``,
``attention_mask`` (B, L), right-padded with ``blank`` / ``-100`` / 0; ``prompt_lens``,
``lengths`` (B,); ``truncated`` (B,) bool; plus ``keys`` (list of B sample keys).

**Layout config.** The layout needs the policy's id scheme (special ids, ``audio_offset``,
``audio_delay``). Under a Trainer it comes from the LightningModule's ``policy_config()``
(:class:`paras2s_pl.modules.sft.SFTModule`), which in turn reads the vocabulary sizes from
this DataModule (``text_vocab_size``, ``codec.vocab_size``) and raises a clear error on a
mismatch, at start-up, before any audio is encoded. Without a Trainer (tests, notebooks) it
is ``DualStreamConfig.tiny(len(tokenizer), codec.vocab_size)`` or what
:meth:`~SFTDataModule.set_layout_config` gave.

**Bad input** is skipped or repaired and counted per split in ``SFTDataModule.stats``
(keyed by split, ``"<split>[:<val_limit>]"`` when limited; logged at setup): samples the
shard reader rejects (empty ``content`` or ``response_text`` fail the demo schema:
``invalid_meta``; bad audio …), responses whose text tokenizes to nothing
(``empty_response_text``) or whose audio encodes to no codes (``empty_query_audio`` /
``empty_response_audio``), prompts that reach ``max_len`` (``prompt_too_long``), and
responses that do not fit ``max_len``: cut (``truncated``) or dropped (``too_long``) per
``too_long``. A split left with no example is an error naming these counts.

Every rank reads and encodes the whole split, so all ranks hold the same list in the same
(key-sorted) order; training takes one seeded order per epoch and gives each rank every n-th
example of it (:func:`~paras2s_pl.data.shards.rank_sampler`), so n ranks x ``batch_size`` b
see per step what 1 rank x n b sees.

Try it (reads ``shards/demo``; build it with ``paras2s shards build-demo``)::

    python -m paras2s_pl.data.sft --root shards/demo --limit 8
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from paras2s_pl.data.batching import per_device_batch
from paras2s_pl.data.shards import ShardDataset, rank_sampler, require_split, unbatched
from paras2s_pl.data.vocab import CodecLike, PolicyVocab
from paras2s_pl.models.dual_stream import DualStreamConfig
from paras2s_pl.models.layout import Example, build_example, build_prompt, collate

log = logging.getLogger(__name__)

#: Keys of a training batch (see the module docstring).
BATCH_KEYS = (
    "audio_ids",
    "text_ids",
    "audio_labels",
    "text_labels",
    "attention_mask",
    "prompt_lens",
    "lengths",
    "truncated",
    "keys",
)


@dataclass
class Turn:
    """One encoded demo: codec codes, text token ids and the metadata validation shows."""

    key: str
    content: str  # the query transcript
    category: str
    style: str
    response_text: str  # the reference reply
    response_tone: str
    query_codes: torch.Tensor  # (Nq,) codec codes of the query audio
    response_codes: torch.Tensor  # (Nr,) codec codes of the response audio
    response_text_ids: list[int]  # tokenizer ids of response_text (no special tokens)
    query_text_ids: list[int] | None = None  # ids of content, when the layout uses it


class _EncodingStream(IterableDataset):
    """Codec-encodes a split's audio (in DataLoader workers); text is tokenized by the caller.

    Yields ``("turn", key, meta, query_codes, response_codes)`` per sample (codes as numpy:
    tensors would cross from workers as shared-memory handles, one open file each) and, last,
    one ``("stats", reader_stats)`` per worker, so the reader's skip counts reach the main
    process.
    """

    def __init__(self, reader: ShardDataset, codec: CodecLike):
        super().__init__()
        self.reader, self.codec = reader, codec

    def __iter__(self) -> Iterator[tuple]:
        for sample in self.reader:
            query = self.codec.encode(sample.user_audio, sample.sample_rate)
            response = self.codec.encode(sample.assistant_audio, sample.sample_rate)
            codes = [torch.as_tensor(c).long().numpy() for c in (query, response)]
            yield "turn", sample.key, sample.meta, *codes
        yield ("stats", self.reader.stats.as_dict())


class _Examples(Dataset):
    """Map-style dataset of ``(key, Example)``."""

    def __init__(self, items: list[tuple[str, Example]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[str, Example]:
        return self.items[index]


class _Collate:
    """:func:`layout.collate` (right padding with ``pad_id``) plus the sample keys."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: Sequence[tuple[str, Example]]) -> dict[str, Any]:
        batch = collate([ex for _, ex in items], self.pad_id)
        batch["keys"] = [key for key, _ in items]
        return batch


class SFTDataModule(PolicyVocab, LightningDataModule):
    """Demo shards as dual-stream SFT batches (see the module docstring).

    Args:
        root: Shard directory holding ``<split>.manifest.json`` (schema ``demo``).
        train_split: Split to train on.
        val_split: Split for validation loss and the validation generations.
        codec: The audio codec (an ``AudioCodec``: ``class_path``/``init_args`` in YAML);
            None = :class:`~paras2s_pl.audio.codec.ProsodyCodec` with its defaults.
        tokenizer: Tokenizer directory (``AutoTokenizer.from_pretrained``); None = the mini
            world's tokenizer (:func:`~paras2s_pl.models.tokenizer.build_mini_tokenizer`).
        trust_remote_code: Passed to the tokenizer loader (Kimi-Audio's tokenizer needs it).
        batch_size: Examples per batch per device.
        global_batch_size: Examples per optimizer step over all devices (the paper: 64);
            when set, ``batch_size`` = this / (devices x accumulation steps), which must
            come out whole (:mod:`paras2s_pl.data.batching`).
        num_workers: DataLoader workers for batches (the data is in memory: 0 is usually best).
        encode_workers: Processes that read and codec-encode the shards in :meth:`setup`.
        max_len: Most positions of one example (prompt + response).
        too_long: A response that does not fit ``max_len``: ``truncate`` (cut; its end
            token is lost) or ``skip``; either way counted.
        val_limit: Use at most this many validation samples (None = all).
        query_transcript: Also write the query transcript (the demo's ``content``) on the
            text stream under the query audio: paper eq. 2's ``t_i``, on as in the paper
            (Kimi-Audio's own inference layout leaves it blank). A property of the trained
            policy: the export records it and every consumer honours it
            (:mod:`paras2s_pl.models.speech_policy`).
        sample_rate: Rate the shard audio is read at (Hz) before encoding.
        shuffle: Shuffle the training examples each epoch.
        seed: Seed of the shuffle.
        test_split: What ``paras2s test`` measures, whole (``val_limit`` does not apply);
            None = ``val_split``.
    """

    def __init__(
        self,
        root: str = "shards/demo",
        train_split: str = "train",
        val_split: str = "test",
        codec: CodecLike | None = None,
        tokenizer: str | None = None,
        trust_remote_code: bool = False,
        batch_size: int = 8,
        global_batch_size: int | None = None,
        num_workers: int = 0,
        encode_workers: int = 0,
        max_len: int = 512,
        too_long: Literal["truncate", "skip"] = "truncate",
        val_limit: int | None = None,
        query_transcript: bool = True,
        sample_rate: int = 16000,
        shuffle: bool = True,
        seed: int = 0,
        test_split: str | None = None,
    ) -> None:
        super().__init__()
        if too_long not in ("truncate", "skip"):
            raise ValueError(f"too_long={too_long!r}; expected 'truncate' or 'skip'")
        self.save_hyperparameters(ignore=["codec"])
        self.root, self.train_split, self.val_split = root, train_split, val_split
        self._init_vocab(codec, tokenizer, trust_remote_code)
        self.global_batch_size = global_batch_size
        self.batch_size, self.num_workers, self.encode_workers = (
            batch_size,
            num_workers,
            encode_workers,
        )
        self.max_len, self.too_long, self.val_limit = max_len, too_long, val_limit
        self.query_transcript, self.sample_rate = query_transcript, sample_rate
        self.shuffle, self.seed = shuffle, seed
        self._layout_cfg: DualStreamConfig | None = None
        self._fixed_layout = False
        self._turns: dict[str, list[Turn]] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.train_examples: list[tuple[str, Example]] = []
        self.val_examples: list[tuple[str, Example]] = []
        self.val_queries: list[Turn] = []
        self.test_split = test_split
        self.test_examples: list[tuple[str, Example]] = []

    # ---- what the model needs from the data ----------------------------------------------
    def set_layout_config(self, cfg: DualStreamConfig | None) -> None:
        """Fix the policy config the layout uses (None: resolve it again at setup)."""
        self._layout_cfg, self._fixed_layout = cfg, cfg is not None

    def layout_config(self) -> DualStreamConfig:
        """The policy config examples are laid out for (module docstring, "Layout config")."""
        if self._layout_cfg is None:
            module = getattr(self.trainer, "lightning_module", None) if self.trainer else None
            resolve = getattr(module, "policy_config", None)
            if callable(resolve):
                self._layout_cfg = resolve()
            else:
                self._layout_cfg = DualStreamConfig.tiny(
                    text_vocab_size=self.text_vocab_size, codec_vocab_size=self.codec_vocab_size
                )
        return self._layout_cfg

    # ---- reading and encoding --------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Resolve the layout config, encode the needed splits (once) and lay them out."""
        self.batch_size = per_device_batch(
            self.global_batch_size, self.batch_size, self.trainer, unit="examples"
        )
        for split in {self.train_split, self.val_split, self.test_split} - {None}:
            require_split(self.root, split, f"paras2s shards build-demo --out {self.root}")
        if not self._fixed_layout:
            self._layout_cfg = None
        cfg = self.layout_config()  # first: a vocabulary mismatch fails before encoding
        if stage in (None, "fit"):
            self.train_examples = self._examples(self.train_split, "train", cfg)
        if stage in (None, "fit", "validate"):
            self.val_examples = self._examples(self.val_split, "val", cfg, self.val_limit)
            self.val_queries = list(self._turns[self._turn_key(self.val_split, self.val_limit)])
        if stage == "test":
            self.test_examples = self._examples(self.test_split or self.val_split, "test", cfg)

    @staticmethod
    def _turn_key(split: str, limit: int | None) -> str:
        return split if limit is None else f"{split}[:{limit}]"

    def _examples(
        self, split: str, role: str, cfg: DualStreamConfig, limit: int | None = None
    ) -> list[tuple[str, Example]]:
        key = self._turn_key(split, limit)
        if key not in self._turns:
            self._turns[key] = self.read_split(split, limit)
        items = self.lay_out(self._turns[key], cfg, self.stats[key])
        counts = self.stats[key]
        log.info(
            "SFT %s data (%s/%s): %d read, %d kept, %d truncated (max_len=%d), skipped %s, "
            "%d query transcripts cut to the query's code span",
            role,
            self.root,
            split,
            counts["read"],
            len(items),
            counts["truncated"],
            self.max_len,
            dict(counts["skipped"]) or "none",
            counts["query_text_truncated"],
        )
        if not items:
            raise ValueError(
                f"{self.root}/{split}: no usable SFT examples (skipped {dict(counts['skipped'])}); "
                f"check the shards (schema 'demo') and max_len={self.max_len}"
            )
        return items

    def read_split(self, split: str, limit: int | None = None) -> list[Turn]:
        """Read and encode one split (sorted by key); counts go to ``stats[split]``."""
        reader = ShardDataset(  # every rank holds the whole split (the sampler splits it)
            self.root, split=split, sample_rate=self.sample_rate, split_by_rank=False
        )
        counts = {"read": 0, "skipped": Counter(), "truncated": 0}
        self.stats[self._turn_key(split, limit)] = counts
        loader = DataLoader(
            _EncodingStream(reader, self.codec),
            batch_size=None,
            num_workers=self.encode_workers,
            collate_fn=unbatched,
        )
        total = min(len(reader), limit) if limit else len(reader)
        turns: list[Turn] = []
        bar = tqdm(total=total, desc=f"encode {split}", unit="sample", leave=False)
        for item in loader:
            if item[0] == "stats":
                counts["skipped"].update(item[1]["skipped"])
                continue
            _, key, meta, query_codes, response_codes = item
            counts["read"] += 1
            bar.update(1)
            codes = torch.from_numpy(query_codes), torch.from_numpy(response_codes)
            turn = self._turn(key, meta, *codes, counts["skipped"])
            if turn is not None:
                turns.append(turn)
            if limit is not None and len(turns) >= limit:
                break
        bar.close()
        return sorted(turns, key=lambda t: t.key)

    def _turn(
        self,
        key: str,
        meta: Any,
        query_codes: torch.Tensor,
        response_codes: torch.Tensor,
        skipped: Counter,
    ) -> Turn | None:
        response_text = getattr(meta, "response_text", "")
        checks = (
            ("empty_transcript", not meta.content.strip()),
            ("empty_response_text", not response_text.strip()),
            ("empty_query_audio", query_codes.numel() == 0),
            ("empty_response_audio", response_codes.numel() == 0),
        )
        text_ids = self._encode_text(response_text) if response_text.strip() else []
        for reason, bad in (*checks, ("empty_response_text", not text_ids)):
            if bad:
                skipped[reason] += 1
                log.warning("skipped %s/%s (%s)", self.root, key, reason)
                return None
        return Turn(
            key=key,
            content=meta.content,
            category=getattr(meta, "category", ""),
            style=getattr(meta, "style", ""),
            response_text=response_text,
            response_tone=getattr(meta, "response_tone", ""),
            query_codes=query_codes,
            response_codes=response_codes,
            response_text_ids=text_ids,
            query_text_ids=self._encode_text(meta.content) if self.query_transcript else None,
        )

    def _encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def lay_out(
        self, turns: Sequence[Turn], cfg: DualStreamConfig, counts: dict[str, Any]
    ) -> list[tuple[str, Example]]:
        """Dual-stream examples of ``turns``; too-long ones cut or skipped per ``too_long``."""
        counts["truncated"] = counts["query_text_truncated"] = 0
        for reason in ("prompt_too_long", "too_long"):
            counts["skipped"].pop(reason, None)
        items = []
        for turn in turns:
            prompt_len = len(build_prompt(turn.query_codes, cfg))
            if prompt_len >= self.max_len:
                counts["skipped"]["prompt_too_long"] += 1
                log.warning(
                    "skipped %s: its prompt has %d positions, max_len=%d",
                    turn.key,
                    prompt_len,
                    self.max_len,
                )
                continue
            ex = build_example(
                turn.query_codes,
                turn.response_text_ids,
                turn.response_codes,
                cfg,
                query_text_ids=turn.query_text_ids,
                max_len=self.max_len,
            )
            if ex.truncated and self.too_long == "skip":
                counts["skipped"]["too_long"] += 1
                continue
            counts["truncated"] += int(ex.truncated)
            counts["query_text_truncated"] += int(ex.query_text_truncated)
            items.append((turn.key, ex))
        return items

    # ---- loaders -----------------------------------------------------------------------------
    def _loader(
        self, items: list[tuple[str, Example]], shuffle: bool, split_ranks: bool = False
    ) -> DataLoader:
        data = _Examples(items)
        return DataLoader(
            data,
            batch_size=self.batch_size,
            sampler=rank_sampler(data, shuffle, self.seed) if split_ranks else None,
            num_workers=self.num_workers,
            collate_fn=_Collate(self.layout_config().text_blank_id),
        )

    def train_dataloader(self) -> DataLoader:
        """Training batches (keys in the module docstring), shuffled unless ``shuffle: false``.

        One global order per epoch, split over the ranks (:func:`rank_sampler`): n ranks x
        ``batch_size`` b train on the same samples per step as 1 rank x n b.
        """
        return self._loader(self.train_examples, self.shuffle, split_ranks=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in key order."""
        return self._loader(self.val_examples, False)

    def test_dataloader(self) -> DataLoader:
        """``paras2s test`` batches (``test_split``, else all of ``val_split``), in key order."""
        return self._loader(self.test_examples, False)

    # ---- validation prompts ------------------------------------------------------------------
    def prompt_batch(self, queries: Sequence[Turn]) -> dict[str, torch.Tensor]:
        """Left-padded generation prompts of ``queries`` (e.g. ``val_queries[:4]``)."""
        cfg = self.layout_config()
        prompts = [build_prompt(q.query_codes, cfg, q.query_text_ids) for q in queries]
        return collate(prompts, cfg.text_blank_id, left_pad=True)


def main() -> None:
    """CLI: encode a few samples of a shard set and print a batch's shapes and the counts."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="shards/demo")
    ap.add_argument("--limit", type=int, default=8, help="validation samples to read")
    ap.add_argument("--max-len", type=int, default=512)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    dm = SFTDataModule(args.root, val_limit=args.limit, max_len=args.max_len)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    for key, value in batch.items():
        print(key, tuple(value.shape) if torch.is_tensor(value) else value)
    print(dm.stats)


if __name__ == "__main__":
    main()
