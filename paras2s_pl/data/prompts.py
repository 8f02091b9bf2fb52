"""RL prompts: speech queries for GRPO (``shards/demo`` split ``rl``) and their rollout schedule.

:class:`PromptDataModule` reads a shard split of any query-bearing schema (``prompt``: the
unlabeled RL set; ``query``/``demo``: labelled, so rewards can be logged per category),
codec-encodes every query **once** in :meth:`~PromptDataModule.setup` and keeps
:class:`Prompt` records (waveform, codes, shard transcript, labels) in memory, in key order,
on every rank. Bad samples are skipped and counted (``stats``, logged at setup).

**The schedule is the data position.** GRPO consumes one batch of ``batch_size`` prompts
per rollout, then trains on that rollout for ``repeats`` training steps (gradient
accumulation micro-batches × ``num_iterations``). :class:`RolloutSchedule`, the training
"dataloader", yields one item per training step::

    {"rollout": g, "phase": p, "prompts": [Prompt, ...]}   # p = 0 .. repeats-1

Item ``s`` is a pure function of ``s`` (``g, p = divmod(s, repeats)``; rollout ``g`` takes
slice ``g`` of a seeded permutation per pass over the prompts, each rank its own part of the
global batch). The iterator starts at ``start``, the number of training steps the module
has finished (it stores that in its checkpoint), so a resumed run continues at exactly the
next step's prompts, without relying on the loader's prefetching.

Try it::

    python -m paras2s_pl.data.prompts --root shards/demo --split rl
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from paras2s_pl.data.batching import per_device_batch
from paras2s_pl.data.shards import ShardDataset, _dist_info, require_split, unbatched
from paras2s_pl.data.vocab import CodecLike, PolicyVocab

log = logging.getLogger(__name__)


@dataclass
class Prompt:
    """One spoken query, ready for the policy (codes) and the reward (waveform, transcript)."""

    key: str
    wav: np.ndarray  # (n,) float32 mono at sample_rate
    sample_rate: int
    codes: torch.Tensor  # (Nq,) codec codes
    content: str  # the shard's transcript ("" when unknown)
    category: str | None = None  # labels, when the shard has them
    style: str | None = None
    meta: Any = field(default=None, repr=False)

    @property
    def seconds(self) -> float:
        """Duration of the query audio."""
        return len(self.wav) / self.sample_rate


class _Encoded(IterableDataset):
    """Codec-encodes a split's queries in DataLoader workers; last item: the reader's stats."""

    def __init__(self, reader: ShardDataset, codec: CodecLike):
        super().__init__()
        self.reader, self.codec = reader, codec

    def __iter__(self) -> Iterator[tuple]:
        for sample in self.reader:
            codes = torch.as_tensor(self.codec.encode(sample.user_audio, sample.sample_rate))
            yield "prompt", sample, codes.long().numpy()
        yield "stats", self.reader.stats.as_dict(), None


class RolloutSchedule:
    """The GRPO training iterable (see the module docstring); infinite.

    Args:
        prompts: All prompts, in the same order on every rank.
        batch_size: Prompts per rollout per rank.
        repeats: Training steps per rollout.
        seed: Seed of the permutation of each pass over the prompts.
        start: First training step to yield.
        shuffle: Permute each pass (else key order).
        rank: This rank; None = the process group's.
        world_size: Ranks; None = the process group's.
    """

    def __init__(
        self,
        prompts: Sequence[Prompt],
        batch_size: int,
        repeats: int = 1,
        seed: int = 0,
        start: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if rank is None or world_size is None:
            rank, world_size = _dist_info()
        self.prompts, self.batch_size, self.repeats = list(prompts), batch_size, repeats
        self.seed, self.start, self.shuffle = seed, start, shuffle
        self.rank, self.world_size = rank, world_size
        per_pass = batch_size * world_size
        if batch_size < 1 or repeats < 1:
            raise ValueError(f"batch_size={batch_size} and repeats={repeats} must be >= 1")
        if len(self.prompts) < per_pass:
            raise ValueError(
                f"{len(self.prompts)} prompts cannot fill one rollout of batch_size={batch_size} "
                f"x {world_size} ranks; lower data.batch_size or add prompts"
            )
        self.rollouts_per_pass = len(self.prompts) // per_pass  # the remainder waits a pass

    def rollout_prompts(self, rollout: int) -> list[Prompt]:
        """This rank's prompts of rollout ``rollout``."""
        passes, index = divmod(rollout, self.rollouts_per_pass)
        n = len(self.prompts)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + passes))
        else:
            order = torch.arange(n)
        per_pass = self.batch_size * self.world_size
        mine = order[index * per_pass : (index + 1) * per_pass]
        mine = mine[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        return [self.prompts[i] for i in mine.tolist()]

    def item(self, step: int) -> dict[str, Any]:
        """What training step ``step`` receives."""
        rollout, phase = divmod(step, self.repeats)
        return {"rollout": rollout, "phase": phase, "prompts": self.rollout_prompts(rollout)}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        step = self.start
        while True:
            yield self.item(step)
            step += 1


class PromptDataModule(PolicyVocab, LightningDataModule):
    """Speech prompts for GRPO, scheduled by rollout (see the module docstring).

    Args:
        root: Shard directory holding ``<split>.manifest.json``.
        split: Split of prompts (``rl``: the unlabeled RL set of ``paras2s shards build-demo``).
        codec: The audio codec (``class_path``/``init_args`` in YAML); None = ProsodyCodec.
        tokenizer: Tokenizer directory; None = the mini world's. The policy's own tokenizer
            (saved beside an exported policy) is what GRPO uses when it has one.
        trust_remote_code: Passed to the tokenizer loader.
        batch_size: Prompts per rollout per device (the paper's B = 32 is the global batch:
            4 on each of 8 GPUs); each is answered ``model.group_size`` times, and a
            group of G never straddles devices.
        global_batch_size: Prompts per rollout over all devices (the paper's B = 32); when
            set, ``batch_size`` = this / devices, which must come out whole (accumulation
            steps split one rollout into micro-batches, they read no more prompts).
        encode_workers: Processes that read and codec-encode the shards in :meth:`setup`.
        sample_rate: Rate the query audio is read at (Hz).
        max_seconds: Skip longer queries (counted).
        limit: Use at most this many prompts (None = all).
        shuffle: Permute the prompts on each pass.
        seed: Seed of the permutation.
    """

    def __init__(
        self,
        root: str = "shards/demo",
        split: str = "rl",
        codec: CodecLike | None = None,
        tokenizer: str | None = None,
        trust_remote_code: bool = False,
        batch_size: int = 4,
        global_batch_size: int | None = None,
        encode_workers: int = 0,
        sample_rate: int = 16000,
        max_seconds: float | None = 30.0,
        limit: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["codec"])
        self._init_vocab(codec, tokenizer, trust_remote_code)
        self.root, self.split, self.batch_size = root, split, batch_size
        self.global_batch_size = global_batch_size
        self.encode_workers, self.sample_rate = encode_workers, sample_rate
        self.max_seconds, self.limit, self.shuffle, self.seed = max_seconds, limit, shuffle, seed
        self.prompts: list[Prompt] = []
        self.stats: dict[str, Any] = {}

    def use_tokenizer(self, tokenizer: Any) -> None:
        """Use this tokenizer object (the policy's own) instead of loading one."""
        self._tokenizer = tokenizer

    def setup(self, stage: str | None = None) -> None:
        """Read and encode the prompts once (every rank, key order)."""
        module = getattr(self.trainer, "lightning_module", None) if self.trainer else None
        check = getattr(module, "check_inputs", None)
        if callable(check):  # a missing policy should not wait for the prompts to encode
            check()
        require_split(self.root, self.split, f"paras2s shards build-demo --out {self.root}")
        self.batch_size = per_device_batch(
            self.global_batch_size, self.batch_size, self.trainer, accumulate=False,
            unit="prompts",
        )  # fmt: skip
        if not self.prompts:
            self.prompts = self.read_prompts()

    def read_prompts(self) -> list[Prompt]:
        """Read and encode the split; counts go to ``stats``."""
        reader = ShardDataset(
            self.root,
            split=self.split,
            sample_rate=self.sample_rate,
            max_seconds=self.max_seconds,
            split_by_rank=False,
        )
        counts: dict[str, Any] = {"read": 0, "skipped": Counter()}
        loader = DataLoader(
            _Encoded(reader, self.codec),
            batch_size=None,
            num_workers=self.encode_workers,
            collate_fn=unbatched,
        )
        total = min(len(reader), self.limit) if self.limit else len(reader)
        prompts: list[Prompt] = []
        for kind, sample, codes in tqdm(loader, total=total, desc="encode prompts", leave=False):
            if kind == "stats":
                counts["skipped"].update(sample["skipped"])
                continue
            counts["read"] += 1
            if codes.size == 0:
                counts["skipped"]["empty_query_audio"] += 1
                log.warning("skipped %s/%s: its audio encodes to no codes", self.root, sample.key)
                continue
            meta = sample.meta
            prompts.append(
                Prompt(
                    key=sample.key,
                    wav=sample.user_audio,
                    sample_rate=sample.sample_rate,
                    codes=torch.from_numpy(codes),
                    content=meta.content,
                    category=getattr(meta, "category", None),
                    style=getattr(meta, "style", None),
                    meta=meta,
                )
            )
            if self.limit is not None and len(prompts) >= self.limit:
                break
        self.stats = counts
        log.info(
            "prompts %s/%s: %d read, %d kept, skipped %s",
            self.root,
            self.split,
            counts["read"],
            len(prompts),
            dict(counts["skipped"]) or "none",
        )
        if not prompts:
            raise ValueError(
                f"{self.root}/{self.split}: no usable prompts (skipped {dict(counts['skipped'])})"
                "; check the shards and max_seconds"
            )
        return sorted(prompts, key=lambda p: p.key)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int):
        """Leave the schedule's items as they are (the GRPO rollout moves what it needs)."""
        return batch

    def train_dataloader(self) -> RolloutSchedule:
        """The rollout schedule; ``repeats`` and ``start`` come from the GRPO module."""
        module = getattr(self.trainer, "lightning_module", None) if self.trainer else None
        return RolloutSchedule(
            self.prompts,
            self.batch_size,
            repeats=int(getattr(module, "steps_per_rollout", 1)),
            seed=self.seed,
            start=int(getattr(module, "consumed_steps", 0)),
            shuffle=self.shuffle,
        )


def main() -> None:
    """CLI: read a prompt split and print the first rollout's keys and the counts."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="shards/demo")
    ap.add_argument("--split", default="rl")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    dm = PromptDataModule(args.root, args.split, batch_size=args.batch_size, limit=args.limit)
    dm.setup("fit")
    schedule = RolloutSchedule(dm.prompts, args.batch_size, rank=0, world_size=1)
    first = schedule.item(0)
    print("rollout 0:", [(p.key, p.content, f"{p.seconds:.1f}s") for p in first["prompts"]])
    print(dm.stats)


if __name__ == "__main__":
    main()
