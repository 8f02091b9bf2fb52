"""Preference data for the reward model: judged (query, response) shards → scored batches.

:class:`PreferenceDataModule` reads a ``preference`` shard set (written by
``paras2s curate preferences``: query audio, response audio, the judge's ``score``, query
``content`` and the response transcript ``response_text``) and turns each pair into model
inputs with the reward model's **featurizer** (codec tokens + transcripts for the
``tokens`` backend, the guideline prompt + Whisper features for ``omni``; see
:mod:`paras2s_pl.models.reward`). Under a Trainer the featurizer comes from the
LightningModule's ``model``; without one, call :meth:`PreferenceDataModule.set_featurizer`.

**Held-out split by query.** With ``val_split: null`` (default) a pair goes to validation
when a hash of ``(seed, pair_id)`` falls under ``val_fraction``: all K responses of a query,
and the query spoken in the contrasting style (same ``pair_id``), land on the same side, so
no query leaks into the held-out Pearson r. Samples without a ``pair_id`` use their query
key (the sample key without its ``_rNNN`` suffix). ``val_queries: N`` holds out exactly N
such query groups instead: the N with the smallest hash under ``seed`` (so a smaller N is a
subset of a larger one, and a fraction's held-out groups are a prefix of the same order),
chosen from the split's metadata (a scan of its tar headers and ``.json`` entries, no audio
decoded), identical in every mode and on every rank. ``val_split: <name>`` uses another
split instead. ``paras2s test`` scores ``test_split`` (whole), else the same held-out pairs.

**Batch keys**: ``features`` (the featurizer's collated dict), ``scores`` (B,) long 1..5,
``categories``, ``keys``, ``groups`` (the held-out unit: pair id, else query key) and
``queries`` (the query key: the sample key without ``_rNNN``; the K responses GRPO would
compare) as lists of B strings.

**Bad input** is skipped and counted (``PreferenceDataModule.stats``, logged at setup):
``missing_score`` / ``bad_score`` (not an integer 1..5), ``bad_audio`` (audio that fails to
decode, is empty or not finite), ``invalid_meta`` and the other reasons of
:class:`~paras2s_pl.data.shards.ShardDataset`, and ``featurize_error`` (the featurizer
raised).

``in_memory: true`` (mini world) featurizes every pair once in :meth:`setup` (in
``encode_workers`` processes); ``in_memory: false`` streams and featurizes in the
DataLoader workers every epoch (paper scale: 320k pairs do not fit in memory); training
then repeats forever, so set ``trainer.max_steps``.

Try it: ``python -m paras2s_pl.data.preferences --root shards/prefs``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from paras2s_pl.data.batching import per_device_batch
from paras2s_pl.data.schema import Sample
from paras2s_pl.data.shards import ShardDataset, load_json, rank_sampler, require_split, unbatched
from paras2s_pl.errors import UsageError

log = logging.getLogger(__name__)

BATCH_KEYS = ("features", "scores", "categories", "keys", "groups", "queries")
RESPONSE_SUFFIX = re.compile(r"_r\d+$")


def query_group(key: str, pair_id: str) -> str:
    """What the held-out split groups by: ``pair_id``, else the query key of a sample key."""
    return pair_id or RESPONSE_SUFFIX.sub("", key)


def query_key(key: str) -> str:
    """The query a response answers: the sample key without its ``_rNNN`` suffix."""
    return RESPONSE_SUFFIX.sub("", key)


def _rank(group: str, seed: int) -> float:
    digest = hashlib.sha1(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_heldout(group: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic: does ``group`` fall in the held-out ``fraction`` under ``seed``?"""
    return _rank(group, seed) < fraction


def heldout_groups(groups: Iterable[str], count: int, seed: int = 0) -> frozenset[str]:
    """The ``count`` groups with the smallest seeded hash (the order :func:`is_heldout` cuts)."""
    ranked = sorted(set(groups), key=lambda g: (_rank(g, seed), g))
    return frozenset(ranked[:count])


def scan_groups(urls: Iterable[str]) -> set[str]:
    """Query groups named by the ``.json`` entries of preference tars; no audio is decoded.

    Unreadable shards or metadata are left out here (the reader counts them when it reads).
    """
    groups: set[str] = set()
    for url in urls:
        try:
            with tarfile.open(url) as tar:
                for member in tar:
                    name = Path(member.name).name
                    if not member.isfile() or not name.endswith(".json"):
                        continue
                    key = str(Path(member.name).parent / name.split(".", 1)[0]).lstrip("./")
                    try:
                        meta = load_json(tar.extractfile(member).read())
                    except ValueError:
                        continue
                    pair_id = meta.get("pair_id") if isinstance(meta, dict) else None
                    groups.add(query_group(key, pair_id or ""))
        except (OSError, tarfile.TarError) as err:
            log.warning("scan of %s for query groups failed: %r", url, err)
    return groups


class PreferenceReader(ShardDataset):
    """:class:`ShardDataset` of schema ``preference`` that names score problems.

    ``rank_local``: split over DataLoader workers only (every rank reads the whole split,
    for the in-memory path); otherwise over ranks × workers as usual.
    """

    def __init__(self, *args: Any, rank_local: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, schema="preference", split_by_rank=not rank_local, **kwargs)

    def decode(self, raw: dict[str, Any]) -> Sample | None:
        """Count a missing or out-of-range score under its own reason, then decode."""
        where = f"{raw.get('__url__', '?')}:{raw.get('__key__', '?')}"
        try:
            meta = load_json(raw["json"])
        except (KeyError, ValueError):
            return super().decode(raw)  # counted there (missing_json / invalid_meta)
        if isinstance(meta, dict):
            score = meta.get("score")
            if score is None:
                self.stats.skip("missing_score", where, "no 'score' in the metadata")
                return None
            if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
                self.stats.skip("bad_score", where, f"score {score!r} is not an integer 1..5")
                return None
        return super().decode(raw)


class _Featurized(IterableDataset):
    """Reader samples → featurized pair dicts (key, category, score, group, features).

    With ``emit_stats`` each worker ends with one ``("stats", reader_stats, errors)`` tuple
    (``errors`` = featurize failures), so the skip counts reach the main process.
    ``side``: keep only ``"train"`` or ``"val"`` pairs, or ``None`` = all. Held out: the
    groups in ``heldout`` when given (``val_queries``), else the hash under ``fraction``.
    """

    def __init__(
        self,
        reader: PreferenceReader,
        featurizer: Any,
        side: str | None,
        fraction: float,
        seed: int,
        emit_stats: bool = True,
        heldout: frozenset[str] | None = None,
    ) -> None:
        super().__init__()
        self.reader, self.featurizer, self.side = reader, featurizer, side
        self.fraction, self.seed, self.emit_stats = fraction, seed, emit_stats
        self.heldout = heldout

    def is_heldout(self, group: str) -> bool:
        """Whether ``group`` is on the validation side."""
        if self.heldout is not None:
            return group in self.heldout
        return is_heldout(group, self.fraction, self.seed)

    def items(self) -> Iterator[tuple]:
        errors: Counter = Counter()
        for s in self.reader:
            meta = s.meta
            group = query_group(s.key, meta.pair_id)
            held = self.is_heldout(group)
            if self.side is not None and held != (self.side == "val"):
                continue
            try:
                feats = self.featurizer(
                    s.user_audio, s.assistant_audio, s.sample_rate, meta.content, meta.response_text
                )
            except Exception as err:  # one bad pair must not stop the run: count, go on
                errors["featurize_error"] += 1
                log.warning("skipped %s (featurize_error): %r", s.key, err)
                continue
            yield (
                "item",
                {
                    "key": s.key,
                    "category": meta.category,
                    "score": meta.score,
                    "group": group,
                    "query": query_key(s.key),
                    "held_out": held,
                    "features": feats,
                },
            )
        if self.emit_stats:
            yield ("stats", self.reader.stats.as_dict(), dict(errors))

    def __iter__(self) -> Iterator[Any]:
        for kind, *rest in self.items():
            if kind == "item":
                yield rest[0]
            elif self.emit_stats:
                yield (kind, *rest)


class _Items(Dataset):
    def __init__(self, items: list[dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


class PreferenceCollate:
    """Featurizer collate + ``scores``, ``categories``, ``keys``, ``groups``, ``queries``."""

    def __init__(self, featurizer: Any):
        self.featurizer = featurizer

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """A batch with the keys of :data:`BATCH_KEYS`."""
        return {
            "features": self.featurizer.collate([it["features"] for it in items]),
            "scores": torch.tensor([it["score"] for it in items], dtype=torch.long),
            "categories": [it["category"] for it in items],
            "keys": [it["key"] for it in items],
            "groups": [it["group"] for it in items],
            "queries": [it.get("query") or query_key(it["key"]) for it in items],
        }


class PreferenceDataModule(LightningDataModule):
    """Preference shards as reward-model batches (see the module docstring).

    Args:
        root: Shard directory holding ``<split>.manifest.json`` (schema ``preference``).
        split: The split to read.
        val_split: A separate validation split; None = hold out ``val_queries`` query groups
            (or ``val_fraction`` of them) of ``split`` (by pair id).
        val_fraction: Fraction of pair ids held out when ``val_split`` and ``val_queries``
            are None.
        val_queries: Hold out exactly this many query groups (pair ids) of ``split``, chosen
            by ``seed``; replaces ``val_fraction``. A held-out r over a handful of queries
            is mostly noise: hold out dozens (the demo: 48).
        batch_size: Pairs per batch per device (the paper: 10).
        global_batch_size: Pairs per optimizer step over all devices; when set,
            ``batch_size`` = this / (devices x accumulation steps), which must come out whole.
        num_workers: DataLoader workers for batches (streaming: they also featurize).
        encode_workers: Processes that read and featurize in :meth:`setup` (in-memory).
        in_memory: Featurize once at setup (True) or stream every epoch (False).
        sample_rate: Rate the shard audio is read at (Hz).
        shuffle: Shuffle training pairs (streaming: a buffer of ``shuffle_buffer``).
        shuffle_buffer: Streaming shuffle buffer, in pairs.
        seed: Seed of the held-out split and of the shuffle.
        limit: Read at most this many pairs (after the split; None = all).
        test_split: What ``paras2s test`` scores: a split of its own (e.g. preferences
            curated from the demo ``test`` split: held-out topics and speakers); None = the
            validation pairs.
    """

    def __init__(
        self,
        root: str = "shards/prefs",
        split: str = "train",
        val_split: str | None = None,
        val_fraction: float = 0.1,
        batch_size: int = 16,
        global_batch_size: int | None = None,
        num_workers: int = 0,
        encode_workers: int = 0,
        in_memory: bool = True,
        sample_rate: int = 16000,
        shuffle: bool = True,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        limit: int | None = None,
        test_split: str | None = None,
        val_queries: int | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction} must be in [0, 1)")
        if val_queries is not None:
            if isinstance(val_queries, bool) or not isinstance(val_queries, int) or val_queries < 1:
                raise ValueError(
                    f"data.init_args.val_queries={val_queries!r}: expected a positive integer "
                    "(query groups to hold out) or null (hold out val_fraction of them)"
                )
            if val_split is not None:
                raise ValueError(
                    f"data.init_args.val_queries={val_queries} and val_split={val_split!r} both "
                    "set: val_queries holds out query groups of `split`, val_split validates on "
                    "another split; set one of them to null"
                )
        self.save_hyperparameters()
        self.root, self.split, self.val_split = root, split, val_split
        self.val_fraction, self.seed, self.limit = val_fraction, seed, limit
        self.global_batch_size = global_batch_size
        self.batch_size, self.num_workers, self.encode_workers = (
            batch_size,
            num_workers,
            encode_workers,
        )
        self.in_memory, self.sample_rate = in_memory, sample_rate
        self.shuffle, self.shuffle_buffer = shuffle, shuffle_buffer
        self._featurizer: Any = None
        self.train_items: list[dict[str, Any]] = []
        self.val_items: list[dict[str, Any]] = []
        self.test_split = test_split
        self.test_items: list[dict[str, Any]] = []
        self.stats: dict[str, Any] = {}
        self.val_queries = val_queries
        self._heldout: frozenset[str] | None = None

    # ---- the featurizer comes from the model ----------------------------------------------
    def set_featurizer(self, featurizer: Any) -> None:
        """Use this featurizer (tests, notebooks); under a Trainer it is the model's."""
        self._featurizer = featurizer

    @property
    def featurizer(self) -> Any:
        """The reward model's featurizer (module docstring)."""
        if self._featurizer is None:
            module = getattr(self.trainer, "lightning_module", None) if self.trainer else None
            model = getattr(module, "model", None)
            if model is None or not hasattr(model, "featurizer"):
                raise RuntimeError(
                    "PreferenceDataModule has no featurizer: run it under a Trainer with a "
                    "RewardModule, or call set_featurizer(reward_model.featurizer)"
                )
            self._featurizer = model.featurizer
        return self._featurizer

    # ---- reading --------------------------------------------------------------------------
    def _reader(self, split: str, rank_local: bool, shuffle: bool, repeat: bool = False):
        return PreferenceReader(
            self.root,
            split=split,
            sample_rate=self.sample_rate,
            rank_local=rank_local,
            shuffle=self.shuffle_buffer if shuffle else 0,
            seed=self.seed,
            repeat=repeat,
        )

    def heldout(self) -> frozenset[str] | None:
        """The held-out query groups with ``val_queries`` (computed once), else None."""
        if self.val_queries is None or self.val_split is not None:
            return None
        if self._heldout is None:
            reader = self._reader(self.split, rank_local=True, shuffle=False)
            groups = scan_groups(reader.urls)
            if len(groups) <= self.val_queries:
                raise ValueError(
                    f"{self.root}/{self.split}: {len(groups)} query groups (pair ids) but "
                    f"data.init_args.val_queries={self.val_queries}, which leaves "
                    f"{max(len(groups) - self.val_queries, 0)} for training; lower val_queries "
                    "or curate more queries (paras2s curate preferences --num_queries)"
                )
            self._heldout = heldout_groups(groups, self.val_queries, self.seed)
            log.info(
                "held out %d of %d query groups of %s/%s (val_queries, seed %d)",
                len(self._heldout), len(groups), self.root, self.split, self.seed,
            )  # fmt: skip
        return self._heldout

    def _sides(self) -> dict[str, tuple[str, str | None]]:
        """Role → (split, side filter)."""
        if self.val_split is not None:
            return {"train": (self.split, None), "val": (self.val_split, None)}
        return {"train": (self.split, "train"), "val": (self.split, "val")}

    def _check_streaming_evaluation(self) -> None:
        """Refuse streamed held-out pairs on several sharded ranks (a hang, not an error).

        Streaming splits the held-out pairs over the ranks as they come, so ranks may get
        one batch more or fewer; under FSDP2 every forward gathers weights from all ranks,
        and a rank with a batch more would wait for the others forever.
        """
        trainer = self.trainer
        if trainer is None or trainer.world_size < 2 or not trainer.limit_val_batches:
            return
        from lightning.pytorch.strategies import ModelParallelStrategy

        if isinstance(trainer.strategy, ModelParallelStrategy):
            raise UsageError(
                "data.init_args.in_memory=false with held-out pairs on several FSDP2 ranks "
                "could hang (unequal batches per rank): use in_memory: true, or "
                "trainer.limit_val_batches 0 and `paras2s test` on one process"
            )

    def setup(self, stage: str | None = None) -> None:
        """In-memory: featurize the needed splits once (skips counted in ``stats``)."""
        self.batch_size = per_device_batch(
            self.global_batch_size, self.batch_size, self.trainer, unit="pairs"
        )
        make = (f"paras2s curate preferences --policy runs/mini/sft_policy --queries "
                f"shards/demo --split train --out {self.root}")  # fmt: skip
        for split in {self.split, self.val_split, self.test_split} - {None}:
            require_split(self.root, split, make)
        if not self.in_memory:
            self._check_streaming_evaluation()
            return
        if stage == "test":
            self.test_items = self._read_all(*self._test_side(), "test")[: self.limit]
            if not self.test_items:
                split, side = self._test_side()
                raise ValueError(
                    f"{self.root}/{split}: no test pairs ({side or 'whole split'}; skipped "
                    f"{self.stats['test']['skipped']}); set data.init_args.test_split to a "
                    f"split with pairs"
                )
            return
        sides = self._sides()
        if self.val_split is None and stage in (None, "fit", "validate"):
            items = self._read_all(self.split, None, "all")
            self.train_items = [it for it in items if not it["held_out"]]
            self.val_items = [it for it in items if it["held_out"]]
        else:
            if stage in (None, "fit"):
                self.train_items = self._read_all(*sides["train"], "train")
            if stage in (None, "fit", "validate"):
                self.val_items = self._read_all(*sides["val"], "val")
        if self.limit is not None:
            self.train_items, self.val_items = (
                self.train_items[: self.limit],
                self.val_items[: self.limit],
            )
        self._check(stage)

    def _read_all(self, split: str, side: str | None, name: str) -> list[dict[str, Any]]:
        reader = self._reader(split, rank_local=True, shuffle=False)
        heldout = self.heldout() if split == self.split else None
        data = _Featurized(
            reader, self.featurizer, side, self.val_fraction, self.seed, heldout=heldout
        )
        loader = DataLoader(
            data, batch_size=None, num_workers=self.encode_workers, collate_fn=unbatched
        )
        items, skipped = [], Counter()
        bar = tqdm(total=len(reader), desc=f"featurize {split}", unit="pair", leave=False)
        for entry in loader:
            if isinstance(entry, tuple) and entry[0] == "stats":
                skipped.update(entry[1]["skipped"])
                skipped.update(entry[2])
                continue
            items.append(entry)
            bar.update(1)
        bar.close()
        items.sort(key=lambda it: it["key"])  # the same order on every rank
        truncated = sum(bool(it["features"].get("truncated")) for it in items)
        self.stats[name] = {"read": len(items), "skipped": dict(skipped), "truncated": truncated}
        log.info(
            "preference data %s/%s (%s): %d pairs, %d truncated, skipped %s",
            self.root,
            split,
            name,
            len(items),
            truncated,
            dict(skipped) or "none",
        )
        return items

    def _check(self, stage: str | None) -> None:
        groups = {
            role: {it["group"] for it in items}
            for role, items in (("train", self.train_items), ("val", self.val_items))
        }
        if stage in (None, "fit") and not self.train_items:
            raise ValueError(
                f"{self.root}/{self.split}: no usable training pairs; stats {self.stats}"
            )
        if stage in (None, "fit", "validate") and not self.val_items:
            raise ValueError(
                f"{self.root}: no held-out pairs (val_fraction={self.val_fraction}, "
                f"val_queries={self.val_queries}, {len(self.train_items)} training pairs); "
                "raise val_fraction, set val_queries or set val_split"
            )
        leaks = groups["train"] & groups["val"]
        if leaks and self.val_split is None:  # cannot happen: the split is by group
            raise AssertionError(f"queries in both train and val: {sorted(leaks)[:5]}")
        self.stats["groups"] = {role: len(g) for role, g in groups.items()}
        counts = {
            r: Counter(it["category"] for it in items)
            for r, items in (("train", self.train_items), ("val", self.val_items))
        }
        self.stats["categories"] = {r: dict(sorted(c.items())) for r, c in counts.items()}

    # ---- loaders --------------------------------------------------------------------------
    def _loader(self, role: str) -> DataLoader:
        collate = PreferenceCollate(self.featurizer)
        if self.in_memory:
            train = role == "train"
            data = _Items(self.train_items if train else self.val_items)
            return DataLoader(  # training: one global order split over the ranks
                data,
                batch_size=self.batch_size,
                sampler=rank_sampler(data, self.shuffle, self.seed) if train else None,
                num_workers=self.num_workers,
                collate_fn=collate,
            )
        split, side = self._sides()[role]
        train = role == "train"
        reader = self._reader(split, rank_local=False, shuffle=self.shuffle and train, repeat=train)
        heldout = self.heldout() if split == self.split else None
        data = _Featurized(
            reader, self.featurizer, side, self.val_fraction, self.seed, False, heldout
        )
        return DataLoader(
            data, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate
        )

    def train_dataloader(self) -> DataLoader:
        """Training batches (keys in the module docstring)."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Held-out batches, in key order."""
        return self._loader("val")

    def _test_side(self) -> tuple[str, str | None]:
        """(split, side filter) of the test pairs: ``test_split`` whole, else the held-out side."""
        return (self.test_split, None) if self.test_split is not None else self._sides()["val"]

    def test_dataloader(self) -> DataLoader:
        """``paras2s test`` batches (``test_split``, else the held-out pairs), in key order."""
        collate = PreferenceCollate(self.featurizer)
        if self.in_memory:
            data = _Items(self.test_items)
        else:
            reader = self._reader(self._test_side()[0], rank_local=False, shuffle=False)
            split, side = self._test_side()
            heldout = self.heldout() if split == self.split else None
            data = _Featurized(
                reader, self.featurizer, side, self.val_fraction, self.seed, False, heldout
            )
        return DataLoader(
            data, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate
        )


def main() -> None:
    """CLI: featurize a preference set with the mini reward model's featurizer; print counts."""
    from paras2s_pl.models.reward import TokensRewardModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="shards/prefs")
    ap.add_argument("--split", default="train")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    dm = PreferenceDataModule(args.root, args.split)
    dm.set_featurizer(TokensRewardModel().featurizer)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    print({k: tuple(v.shape) for k, v in batch["features"].items()}, batch["scores"].tolist())
    print(json.dumps(dm.stats, indent=2))


if __name__ == "__main__":
    main()
