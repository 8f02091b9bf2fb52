"""Write and read WebDataset shard sets with manifests.

Layout: ``<root>/<split>-%06d.tar`` plus ``<root>/<split>.manifest.json``. A shard is
written to ``<name>.partial`` and renamed when it is complete, and the manifest (written
last) lists the finished shards, so a crashed writer never leaves a truncated shard that
looks whole.

Reading::

    from paras2s_pl.data.shards import ShardDataset
    ds = ShardDataset("shards/demo", split="train", sample_rate=16000, shuffle=100)
    for sample in ds: ...          # paras2s_pl.data.schema.Sample
    print(ds.stats)                # what was skipped or repaired, and why

Bad samples (undecodable, empty, NaN audio; missing audio or json; invalid or too deeply
nested metadata; truncated tar; a key that cannot name a file, a repeated key or a repeated
member; audio whose header declares an absurd rate or more than ``max_seconds``) are
skipped and counted in :class:`ReadStats`; multi-channel audio is downmixed and off-rate
audio resampled (counted as repairs). The run continues; a ``repeat=True`` reader whose
full pass yields nothing raises :class:`~paras2s_pl.errors.NoUsableDataError` instead of
looping forever.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DistributedSampler

from paras2s_pl.audio.io import (
    AudioError,
    AudioTooLongError,
    check_finite,
    decode_audio,
    encode_audio,
    resample,
    to_mono,
)
from paras2s_pl.data.schema import (
    PromptMeta,
    Sample,
    SchemaError,
    meta_to_json,
    parse_meta,
    schema_class,
)
from paras2s_pl.errors import MissingInputError, NoUsableDataError, UsageError

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
ROLE_EXTENSIONS = {"user": ("flac", "wav"), "assistant": ("resp.flac", "resp.wav")}
#: Longest key in UTF-8 bytes: keys become file names (``.<key>.flac.tmp``), at most 255.
MAX_KEY_BYTES = 200
#: Audio duration bound of a reader without ``max_seconds``: no utterance of a speech set is
#: this long, and the header is checked before decoding, so memory stays bounded.
MAX_AUDIO_SECONDS = 600.0


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot name a sample (it becomes a file name), or None when it can."""
    if not key:
        return "must not be empty"
    if "." in key or "/" in key or "\\" in key:
        return "must not contain '.', '/' or '\\' (WebDataset; keys become file names)"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:  # tarfile decodes non-UTF-8 names with surrogate escapes
        return "must be valid UTF-8"
    if size > MAX_KEY_BYTES:
        return f"must be at most {MAX_KEY_BYTES} bytes (UTF-8), not {size}"
    if not key.isprintable():
        return "must not contain control characters"
    return None


def load_json(data: bytes | str) -> Any:
    """``json.loads`` that raises ``ValueError`` on too deep nesting, not ``RecursionError``."""
    try:
        return json.loads(data)
    except RecursionError:  # ~1,000 levels: 2 KB of brackets must not stop a reader
        raise ValueError("json nested too deeply") from None


def manifest_path(root: str | Path, split: str) -> Path:
    """Where the manifest of ``split`` under ``root`` lives."""
    return Path(root) / f"{split}.manifest.json"


def existing_shards(root: str | Path, split: str) -> list[Path]:
    """Finished and partial shard files of ``split`` under ``root``."""
    root = Path(root)
    return sorted(root.glob(f"{split}-*.tar")) + sorted(root.glob(f"{split}-*.tar{PARTIAL_SUFFIX}"))


class ShardSetWriter:
    """Write one split of a shard set atomically, then its manifest.

    Args:
        root: Output directory (created).
        split: Split name: ``train``, ``test``, ``rl`` …
        schema: Metadata kind, a key of :data:`paras2s_pl.data.schema.SCHEMAS`.
        sample_rate: Rate the audio is stored at.
        audio_format: ``flac`` (default) or ``wav``.
        maxcount: Samples per shard.
        overwrite: Replace existing shards of this split; otherwise refuse.
        provenance: How the set was made (command, seed, backends…) for the manifest.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        schema: str,
        sample_rate: int = 16000,
        audio_format: str = "flac",
        maxcount: int = 500,
        overwrite: bool = False,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        if audio_format not in ("flac", "wav"):
            raise ValueError(f"audio_format={audio_format!r}; expected 'flac' or 'wav'")
        schema_class(schema)
        self.root, self.split, self.schema = Path(root), split, schema
        self.sample_rate, self.audio_format = sample_rate, audio_format
        self.provenance = provenance or {}
        old = existing_shards(self.root, split)
        if old or manifest_path(self.root, split).exists():
            if not overwrite:
                raise FileExistsError(
                    f"{self.root} already holds shards of split {split!r} ({len(old)} files); "
                    "pass --overwrite to replace them or choose another --out"
                )
            for path in old:
                path.unlink()
            manifest_path(self.root, split).unlink(missing_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        self._failed = False
        self._shards: list[dict[str, Any]] = []
        self._count_in_shard = 0
        self._metas: list[PromptMeta] = []
        self._seconds = 0.0
        self._keys: set[str] = set()
        self.skipped: Counter = Counter()
        self.manifest: dict[str, Any] | None = None
        self._writer = wds.ShardWriter(
            str(self.root / f"{split}-%06d.tar"),
            maxcount=maxcount,
            verbose=0,
            opener=lambda name: open(name + PARTIAL_SUFFIX, "wb"),  # noqa: SIM115
            post=self._finish_shard,
        )

    def _finish_shard(self, name: str) -> None:
        partial = Path(name + PARTIAL_SUFFIX)
        if self._failed or self._count_in_shard == 0:
            partial.unlink(missing_ok=True)  # a failed or empty shard never looks whole
        else:
            os.replace(partial, name)
            self._shards.append({"file": Path(name).name, "count": self._count_in_shard})
        self._count_in_shard = 0

    def write(
        self,
        key: str,
        meta: PromptMeta,
        user_audio: np.ndarray,
        assistant_audio: np.ndarray | None = None,
    ) -> None:
        """Validate and append one sample (audio at :attr:`sample_rate`)."""
        problem = key_problem(key)
        if problem is not None:  # the reader would skip it
            raise ValueError(f"sample key {key!r} {problem}")
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r} in split {self.split!r}")
        if not isinstance(meta, schema_class(self.schema)):
            raise TypeError(
                f"meta is {type(meta).__name__}; schema {self.schema!r} expects "
                f"{schema_class(self.schema).__name__}"
            )
        meta.validate()
        ext = self.audio_format
        record: dict[str, Any] = {
            "__key__": key,
            ext: encode_audio(user_audio, self.sample_rate, ext),
            "json": json.dumps(meta_to_json(meta), ensure_ascii=False).encode(),
        }
        if "assistant" in meta.audio_entries:
            if assistant_audio is None:
                raise ValueError(f"schema {self.schema!r} needs assistant audio for {key!r}")
            record[f"resp.{ext}"] = encode_audio(assistant_audio, self.sample_rate, ext)
        self._writer.write(record)
        self._count_in_shard += 1
        self._keys.add(key)
        self._metas.append(meta)
        self._seconds += len(user_audio) / self.sample_rate

    def skip(self, key: str, reason: str, detail: str = "") -> None:
        """Record a sample that could not be made; the manifest counts it by reason."""
        self.skipped[reason] += 1
        log.warning("skipped %s (%s) %s", key, reason, detail)

    def close(self) -> dict[str, Any] | None:
        """Finish the last shard and write the manifest; returns the manifest."""
        if self.manifest is not None:
            return self.manifest
        self._writer.close()
        if self._failed:
            return None
        manifest = build_manifest(
            self._metas,
            split=self.split,
            schema=self.schema,
            seconds=self._seconds,
            sample_rate=self.sample_rate,
            audio_format=self.audio_format,
            shards=self._shards,
            provenance=self.provenance,
        )
        manifest["skipped"] = dict(self.skipped)
        tmp = manifest_path(self.root, self.split).with_suffix(".json.partial")
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        os.replace(tmp, manifest_path(self.root, self.split))
        self.manifest = manifest
        return manifest

    def __enter__(self) -> ShardSetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._failed = True  # drop the unfinished shard; no manifest: the set is not done
            self._writer.close()
            return
        self.close()


def build_manifest(
    metas: Iterable[PromptMeta],
    *,
    split: str,
    schema: str,
    seconds: float,
    sample_rate: int,
    audio_format: str,
    shards: list[dict[str, Any]],
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """Counts, hours, label balance, topics and speakers of a split, and how it was made."""
    metas = list(metas)
    balance: dict[str, Counter] = {}
    topics: Counter = Counter()
    for m in metas:
        category = getattr(m, "category", None)
        if category is not None:
            balance.setdefault(category, Counter())[m.style] += 1
        if getattr(m, "topic", ""):
            topics[m.topic] += 1
    extra: dict[str, Any] = {}
    scores = [m.score for m in metas if hasattr(m, "score")]
    if scores:
        extra["score_histogram"] = dict(sorted(Counter(scores).items()))
    return {
        "split": split,
        "schema": schema,
        "count": len(metas),
        "hours": round(seconds / 3600, 4),
        "mean_seconds": round(seconds / max(len(metas), 1), 3),
        "sample_rate": sample_rate,
        "audio_format": audio_format,
        "label_balance": {c: dict(sorted(v.items())) for c, v in sorted(balance.items())},
        "topics": dict(sorted(topics.items())),
        "speakers": dict(sorted(Counter(m.speaker for m in metas).items())),
        "shards": shards,
        "provenance": {
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **provenance,
        },
        **extra,
    }


def read_manifest(root: str | Path, split: str) -> dict[str, Any]:
    """Load a split's manifest; ``MissingInputError`` (a FileNotFoundError) says how to make one."""
    path = manifest_path(root, split)
    if not path.exists():
        raise MissingInputError(
            f"no manifest {path}: the split {split!r} was never finished. Build it with "
            "`paras2s shards build-demo --out ...` or pass the tar files directly"
        )
    return _load_manifest(path)


def require_split(root: str | Path, split: str, make: str) -> None:
    """Raise :class:`MissingInputError` when ``root`` holds no manifest of ``split``.

    The message names ``data.init_args.root`` and ``make``, the command that writes the split.
    """
    if not manifest_path(root, split).exists():
        raise MissingInputError(
            f"no {split!r} split under {root} (data.init_args.root: no "
            f"{manifest_path(root, split).name}); make it with `{make}` or point "
            "--data.init_args.root at it"
        )


def _load_manifest(path: Path) -> dict[str, Any]:
    """A manifest that lists its shards, or :class:`UsageError` naming the file and the fix."""
    fix = "rebuild the split (`paras2s shards build-demo --overwrite`, `paras2s curate …`)"
    try:
        manifest = load_json(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: not a valid manifest ({err}); {fix}") from None
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, list):
        raise UsageError(f"{path}: field 'shards' (the list of shard files) is missing; {fix}")
    if not all(isinstance(s, dict) and isinstance(s.get("file"), str) for s in shards):
        raise UsageError(f"{path}: field 'shards' needs entries {{\"file\": ...}}; {fix}")
    return manifest


def _listed(root: Path, manifest: dict[str, Any], path: Path) -> list[str]:
    """The shard files a manifest lists; :class:`MissingInputError` when one is gone."""
    urls = [root / s["file"] for s in manifest["shards"]]
    missing = [u for u in urls if not u.exists()]
    if missing:
        raise MissingInputError(
            f"{path} lists {len(missing)} shard file(s) that are missing (first: {missing[0]}); "
            "copy the whole shard directory or rebuild the split"
        )
    return [str(u) for u in urls]


# --------------------------------------------------------------------------- reading


@dataclasses.dataclass
class ReadStats:
    """What a reader skipped or repaired, by reason (exact per process; logged)."""

    yielded: int = 0
    skipped: Counter = dataclasses.field(default_factory=Counter)
    repaired: Counter = dataclasses.field(default_factory=Counter)

    @property
    def num_skipped(self) -> int:
        """Total samples skipped."""
        return sum(self.skipped.values())

    def skip(self, reason: str, where: str, detail: str) -> None:
        """Count and log one skipped sample or shard."""
        self.skipped[reason] += 1
        log.warning("skipped %s (%s): %s", where, reason, detail)

    def as_dict(self) -> dict[str, Any]:
        """A json-friendly summary."""
        return {
            "yielded": self.yielded,
            "skipped": dict(self.skipped),
            "repaired": dict(self.repaired),
        }


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def rank_sampler(dataset: Any, shuffle: bool, seed: int) -> DistributedSampler:
    """This rank's part of one global order of ``dataset`` (also on a single process).

    The order is a seeded permutation of the whole dataset (or key order), whatever the
    number of ranks; rank ``r`` of ``n`` takes every ``n``-th index (padded so that all ranks
    get as many). So step ``k`` of ``n`` ranks x batch ``b`` sees exactly the samples of step
    ``k`` of 1 rank x batch ``n b``. Lightning calls ``set_epoch`` on it (a new order per
    epoch) and keeps it instead of inserting its own (which would always shuffle).
    """
    rank, world = _dist_info()
    return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)


def _worker_info() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class ShardDataset(torch.utils.data.IterableDataset):
    """Decoded samples from a shard set, split over nodes and workers.

    Args:
        source: A directory holding ``<split>.manifest.json``, a manifest path, or a list
            of tar paths/URLs (brace patterns allowed).
        split: The split to read when ``source`` is a directory.
        sample_rate: Rate every returned waveform has (resampled if needed).
        schema: Metadata kind to validate against; defaults to the manifest's.
        shuffle: Shuffle buffer size in samples (0: keep order); shards are shuffled too.
        seed: Seed of both shuffles; the epoch is added so each epoch differs.
        repeat: Loop forever (for step-based training); a pass that yields nothing raises
            :class:`~paras2s_pl.errors.NoUsableDataError`.
        max_seconds: Skip samples with longer audio (counted), judged from the header
            before decoding; default :data:`MAX_AUDIO_SECONDS`.
        split_by_rank: Split over ranks × DataLoader workers (streaming training). False:
            over workers only, so every rank reads the whole split (in-memory data that a
            distributed sampler splits later).
    """

    def __init__(
        self,
        source: str | Path | list[str],
        split: str | None = None,
        sample_rate: int = 16000,
        schema: str | None = None,
        shuffle: int = 0,
        seed: int = 0,
        repeat: bool = False,
        max_seconds: float | None = None,
        split_by_rank: bool = True,
    ) -> None:
        super().__init__()
        self.split_by_rank = split_by_rank
        self.urls, manifest = self._resolve(source, split)
        self.schema = schema or (manifest or {}).get("schema") or "query"
        schema_class(self.schema)
        self.stored_rate = (manifest or {}).get("sample_rate")
        self.length = (manifest or {}).get("count")
        self.sample_rate, self.shuffle, self.seed = sample_rate, shuffle, seed
        self.repeat, self.max_seconds = repeat, max_seconds
        self.epoch = 0
        self.stats = ReadStats()

    @staticmethod
    def _resolve(source: str | Path | list[str], split: str | None):
        if isinstance(source, list | tuple):
            return [u for s in source for u in wds.shardlists.expand_urls(str(s))], None
        path = Path(source)
        if path.is_dir():
            if split is None:
                raise ValueError(f"{path} is a directory: pass split= (e.g. 'train')")
            manifest = read_manifest(path, split)
            return _listed(path, manifest, manifest_path(path, split)), manifest
        if path.suffix == ".json":
            if not path.is_file():
                raise MissingInputError(f"no manifest {path}")
            manifest = _load_manifest(path)
            return _listed(path.parent, manifest, path), manifest
        urls = wds.shardlists.expand_urls(str(source))
        local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
        if local and not any(Path(u).exists() for u in local):
            raise MissingInputError(
                f"no shard set at {source}: expected a directory with <split>.manifest.json "
                "(e.g. `paras2s shards build-demo --out DIR`), a manifest .json or tar files"
            )
        return urls, None

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle order per epoch (call from the DataModule)."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("length unknown without a manifest")
        return self.length

    # Splitting: with at least one shard per (rank, worker) slot, shards are split
    # (cheap, the usual WebDataset way). With fewer shards than slots, as in small sets,
    # shard splitting would leave some ranks without data and hang DDP/FSDP, so every
    # slot reads all shards and keeps every n-th sample instead.
    def _slots(self) -> tuple[int, int]:
        rank, world = _dist_info() if self.split_by_rank else (0, 1)
        worker, workers = _worker_info()
        return rank * workers + worker, world * workers

    def __iter__(self) -> Iterator[Sample]:
        slot, slots = self._slots()
        # Same order on every rank (shards are then split), new order each epoch.
        rng = random.Random(f"{self.seed}-{self.epoch}")
        while True:
            urls = list(self.urls)
            if self.shuffle:
                rng.shuffle(urls)
            by_shard = len(urls) >= slots
            if by_shard:
                urls = urls[slot::slots]
            samples = self._decoded(urls, keep=None if by_shard else (slot, slots))
            if self.shuffle:
                samples = wds.shuffle(
                    self.shuffle, initial=self.shuffle, rng=random.Random(rng.random() + slot)
                )(samples)
            yielded = 0
            for sample in samples:
                yielded += 1
                yield sample
            if not self.repeat:
                break
            if not yielded:  # another pass would yield nothing either: spinning forever
                first = f"{urls[0]}{' …' if len(urls) > 1 else ''}" if urls else "none"
                raise NoUsableDataError(
                    f"no usable sample in a full pass over {len(urls)} shard(s) ({first}; "
                    f"reader {slot + 1} of {slots}), skipped {dict(self.stats.skipped)}; "
                    "`paras2s shards inspect` says why"
                )
        if self.stats.num_skipped:
            log.warning("shard reader (slot %d/%d): %s", slot, slots, self.stats.as_dict())

    def _raw(self, urls: list[str]) -> Iterator[dict[str, Any]]:
        """Tar members as ``{"fname", "data", "__url__"}``, ``{}`` at the end of each shard."""
        for url in urls:
            try:
                yield from wds.tariterators.tar_file_expander(
                    wds.tariterators.url_opener([{"url": url}])
                )
            except Exception as err:  # truncated or corrupt tar: count, go on to next shard
                self.stats.skip("corrupt_shard", url, repr(err))
                yield {}  # end the sample it cut off, so it never merges with the next shard

    def _grouped(self, urls: list[str]) -> Iterator[tuple[dict[str, Any], list[str]]]:
        """Members grouped into ``(raw sample, repeated extensions)`` (key: up to first dot).

        Unlike ``wds.group_by_keys``, which counts a repeated member (two ``.json``) but
        still yields its sample, the repeats are returned, so the sample is skipped whole.
        """
        current: dict[str, Any] | None = None
        repeated: list[str] = []
        for member in self._raw(urls):
            if not member:  # the end of a shard
                if current is not None:
                    yield current, repeated
                current, repeated = None, []
                continue
            key, ext = wds.tariterators.base_plus_ext(member["fname"])
            if key is None:  # a name without an extension belongs to no sample
                continue
            if current is not None and key != current["__key__"]:
                yield current, repeated
                current, repeated = None, []
            if current is None:
                current = {"__key__": key, "__url__": member["__url__"]}
            ext = ext.lower()
            if ext in current:
                repeated.append(ext)
            else:
                current[ext] = member["data"]
        if current is not None:
            yield current, repeated

    def _checked(
        self, grouped: Iterable[tuple[dict[str, Any], list[str]]]
    ) -> Iterator[dict[str, Any]]:
        """Raw samples whose key can name a file, seen once this pass, each member once."""
        seen: set[str] = set()
        for raw, repeated in grouped:
            key = raw["__key__"]
            where = f"{raw['__url__']}:{key!r}"  # repr: an invalid key may not print
            problem = key_problem(key)
            if problem is not None:
                self.stats.skip("invalid_key", where, f"sample key {problem}")
            elif key in seen:
                self.stats.skip("duplicate_key", where, "key seen before; kept the first")
            elif repeated:
                seen.add(key)
                self.stats.skip("duplicate_member", where, f"repeats its {repeated} member(s)")
            else:
                seen.add(key)
                yield raw

    def _decoded(self, urls: list[str], keep: tuple[int, int] | None) -> Iterator[Sample]:
        index = 0
        # Checked before the slot split: every slot then numbers the same samples.
        for raw in self._checked(self._grouped(urls)):
            if keep is not None:
                index += 1
                if (index - 1) % keep[1] != keep[0]:
                    continue
            sample = self.decode(raw)
            if sample is not None:
                self.stats.yielded += 1
                yield sample

    def decode(self, raw: dict[str, Any]) -> Sample | None:
        """Decode one raw tar sample; ``None`` (counted) when it must be skipped."""
        key = raw.get("__key__", "?")
        where = f"{raw.get('__url__', '?')}:{key}"
        if "json" not in raw:
            self.stats.skip("missing_json", where, "no .json entry; every sample needs metadata")
            return None
        try:
            meta = parse_meta(load_json(raw["json"]), self.schema)
        except (SchemaError, ValueError, RecursionError) as err:  # RecursionError: deep values
            self.stats.skip("invalid_meta", where, str(err))
            return None
        audio: dict[str, np.ndarray] = {}
        for role in meta.audio_entries:
            ext = next((e for e in ROLE_EXTENSIONS[role] if e in raw), None)
            if ext is None:
                self.stats.skip(
                    f"missing_{role}_audio", where, f"no {' or '.join(ROLE_EXTENSIONS[role])} entry"
                )
                return None
            try:
                audio[role] = self._load(raw[ext], where, role)
            except AudioTooLongError as err:
                self.stats.skip("too_long", where, f"{role} audio: {err}")
                return None
            except AudioError as err:
                self.stats.skip("bad_audio", where, f"{role} audio: {err}")
                return None
        return Sample(
            key=key,
            meta=meta,
            user_audio=audio["user"],
            sample_rate=self.sample_rate,
            assistant_audio=audio.get("assistant"),
            extras={"url": raw.get("__url__")},
        )

    def _load(self, data: bytes, where: str, role: str) -> np.ndarray:
        wav, sr = decode_audio(data, max_seconds=self.max_seconds or MAX_AUDIO_SECONDS)
        if wav.ndim == 2 and wav.shape[1] > 1:
            self.stats.repaired["downmix"] += 1
        wav = check_finite(to_mono(wav), f"{role} audio")
        if self.stored_rate is not None and sr != self.stored_rate:
            self.stats.repaired["resample"] += 1
            log.info(
                "%s: %s audio at %d Hz, set is %d Hz: resampled", where, role, sr, self.stored_rate
            )
        return resample(wav, sr, self.sample_rate)


def unbatched(item: Any) -> Any:
    """``collate_fn`` of loaders that pass items through one by one (picklable, for workers)."""
    return item
