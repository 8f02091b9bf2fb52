"""Where a system's responses come from: one waveform per test query, found by sample key.

A :class:`ResponseSource` answers ``get(key) -> (wav, sample_rate)`` or ``None`` when the
system produced nothing for that query. Two sources:

* :class:`DirResponses` — a directory of ``<key>.flac`` (or ``<key>.wav``) files, what
  ``paras2s bench respond`` and most inference scripts write.
* :class:`ShardResponses` — a shard set keyed by the test queries' keys: each sample's
  ``resp.flac`` (``assistant_audio``) is the response; a set without response audio
  (schema ``prompt``/``query``, e.g. a model's outputs written as plain samples) uses its
  ``flac`` (``user_audio``) instead.

**Missing responses** (``get`` returns ``None``) are not dropped: the evaluation writes a
row with status ``missing`` and no score, reports the count per category beside each
mean, and never averages them in (no invented "1 for no answer"; a reader sees both
numbers). Undecodable or non-finite audio raises :class:`~paras2s_pl.audio.io.AudioError`,
which the evaluation records as an ``error`` row.

:func:`open_responses` picks the source from a path: a directory holding
``<split>.manifest.json`` is a shard set, any other directory a file directory.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from paras2s_pl.audio.io import check_finite, decode_audio, to_mono
from paras2s_pl.data.shards import manifest_path, read_manifest

AUDIO_SUFFIXES = (".flac", ".wav")
#: Tar member extensions tried in order: the response entry first, then the plain one.
SHARD_EXTENSIONS = ("resp.flac", "resp.wav", "flac", "wav")

Audio = tuple[np.ndarray, int]


@runtime_checkable
class ResponseSource(Protocol):
    """Responses of one system, by test-query key."""

    def get(self, key: str) -> Audio | None:
        """The response to query ``key`` as (mono float32 wav, rate); None if there is none."""
        ...

    def describe(self) -> dict[str, Any]:
        """How to reopen this source (``open_responses(**describe())``), for summaries."""
        ...


def _decode(data: bytes, where: str) -> Audio:
    wav, sr = decode_audio(data)
    return check_finite(to_mono(wav), where), sr


class DirResponses:
    """``<key>.flac`` / ``<key>.wav`` files in one directory (not recursive).

    Args:
        path: the directory; must exist.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(
                f"responses directory {self.path} does not exist; write <key>.flac files "
                "there (e.g. with `paras2s bench respond`) or pass a shard set"
            )
        self.files: dict[str, Path] = {}
        for suffix in reversed(AUDIO_SUFFIXES):  # .flac wins over .wav for the same key
            self.files.update({p.name[: -len(suffix)]: p for p in self.path.glob(f"*{suffix}")})

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"DirResponses({str(self.path)!r}, {len(self)} files)"

    def path_of(self, key: str) -> Path | None:
        """The audio file of ``key``, if any."""
        return self.files.get(key)

    def get(self, key: str) -> Audio | None:
        """Decode ``<key>.flac`` (or ``.wav``); None when neither exists."""
        path = self.files.get(key)
        return None if path is None else _decode(path.read_bytes(), str(path))

    def describe(self) -> dict[str, Any]:
        """``{"path": ..., "split": None}``."""
        return {"path": str(self.path.resolve()), "split": None}


class ShardResponses:
    """Responses stored in a shard set (``<root>/<split>-*.tar`` + manifest).

    The encoded audio entries are indexed once (bytes in memory, decoded on ``get``);
    samples without any audio entry count as missing.

    Args:
        root: the shard directory.
        split: the split holding the responses.
    """

    def __init__(self, root: str | Path, split: str) -> None:
        self.root, self.split = Path(root), split
        manifest = read_manifest(self.root, split)
        self.entries: dict[str, tuple[str, bytes]] = {}
        for shard in manifest["shards"]:
            self._index(self.root / shard["file"])

    def _index(self, tar_path: Path) -> None:
        found: dict[str, dict[str, bytes]] = {}
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")  # WebDataset: key = up to 1st dot
                if ext in SHARD_EXTENSIONS:
                    found.setdefault(key, {})[ext] = tar.extractfile(member).read()
        for key, audio in found.items():
            ext = next(e for e in SHARD_EXTENSIONS if e in audio)
            self.entries[key] = (f"{tar_path}:{key}.{ext}", audio[ext])

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"ShardResponses({str(self.root)!r}, split={self.split!r}, {len(self)} samples)"

    def get(self, key: str) -> Audio | None:
        """Decode the response entry of sample ``key``; None when the set lacks it."""
        entry = self.entries.get(key)
        return None if entry is None else _decode(entry[1], entry[0])

    def describe(self) -> dict[str, Any]:
        """``{"path": root, "split": split}``."""
        return {"path": str(self.root.resolve()), "split": self.split}


def open_responses(path: str | Path, split: str | None = None) -> ResponseSource:
    """A shard set when ``path`` holds ``<split>.manifest.json``, else a file directory."""
    path = Path(path)
    if split is not None and manifest_path(path, split).exists():
        return ShardResponses(path, split)
    if split is not None and any(path.glob("*.manifest.json")):
        raise FileNotFoundError(
            f"{path} is a shard set without a {split!r} split; pass the split that holds the "
            f"responses (found {sorted(p.name for p in path.glob('*.manifest.json'))})"
        )
    return DirResponses(path)
