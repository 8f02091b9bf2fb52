"""Shard writing and reading: round trip, every corrupt case skipped and counted, atomicity."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import webdataset as wds

from paras2s_pl.bench.systems import build_responses, write_response
from paras2s_pl.cli import USER_ERRORS
from paras2s_pl.data.preferences import PreferenceReader, scan_groups
from paras2s_pl.data.schema import DemoMeta, SchemaError, parse_meta
from paras2s_pl.data.shards import ShardDataset, ShardSetWriter, read_manifest
from paras2s_pl.errors import NoUsableDataError
from paras2s_pl.testing import tiny_meta, tone, write_tiny_set

PCM16_STEP = 1 / 32768


def keys(ds) -> list[str]:
    return [s.key for s in ds]


def test_round_trip_keeps_keys_metadata_and_audio(tmp_path):
    metas = [tiny_meta(i, "demo") for i in range(5)]
    user = [tone(0.5, 200 + 10 * i) for i in range(5)]
    with ShardSetWriter(tmp_path, "train", "demo", maxcount=2) as w:
        for i, m in enumerate(metas):
            w.write(f"k{i}", m, user[i], tone(0.3, 400))
    manifest = read_manifest(tmp_path, "train")
    assert manifest["count"] == 5 and [s["count"] for s in manifest["shards"]] == [2, 2, 1]
    out = list(ShardDataset(tmp_path, "train", sample_rate=16000))
    assert [s.key for s in out] == [f"k{i}" for i in range(5)]
    for i, s in enumerate(out):
        assert s.meta == metas[i]
        assert s.user_audio.dtype == np.float32 and s.user_audio.ndim == 1
        np.testing.assert_allclose(s.user_audio, user[i], atol=PCM16_STEP)
        assert s.assistant_audio is not None and len(s.assistant_audio) == len(tone(0.3, 400))


def test_manifest_counts_balance_topics_speakers_hours(tmp_path):
    m = write_tiny_set(tmp_path, "test", n=8, schema="demo")
    assert m["count"] == 8 and m["schema"] == "demo"
    assert m["label_balance"]["emotion"] == {"happy": 1, "surprised": 1}
    assert sum(m["topics"].values()) == 8 and m["speakers"] == {"m1": 8}
    assert m["hours"] == pytest.approx(sum(0.5 + 0.1 * (i % 3) for i in range(8)) / 3600, abs=1e-4)
    assert m["provenance"]["command"].endswith("write_tiny_set")


def test_reader_resamples_to_requested_rate(tmp_path):
    write_tiny_set(tmp_path, n=2)
    s = next(iter(ShardDataset(tmp_path, "train", sample_rate=24000)))
    assert s.sample_rate == 24000 and len(s.user_audio) == int(0.5 * 24000)


# ------------------------------------------------------------------ corrupt input


def _flac(wav: np.ndarray, sr: int = 16000, fmt: str = "FLAC", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _bad_set(root: Path, records: list[dict]) -> None:
    """Two good samples, then ``records`` as written, with a manifest naming the shard."""
    good = json.dumps(tiny_meta(0, "demo").__dict__).encode()
    with wds.TarWriter(str(root / "train-000000.tar")) as tw:
        for i in range(2):
            tw.write(
                {
                    "__key__": f"good{i}",
                    "flac": _flac(tone(0.3, 200)),
                    "resp.flac": _flac(tone(0.3, 300)),
                    "json": good,
                }
            )
        for r in records:
            tw.write(r)
    (root / "train.manifest.json").write_text(
        json.dumps(
            {
                "schema": "demo",
                "sample_rate": 16000,
                "count": 2 + len(records),
                "shards": [{"file": "train-000000.tar", "count": 2 + len(records)}],
            }
        )
    )


META = tiny_meta(1, "demo").__dict__
RESP = _flac(tone(0.3, 300))


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"json": json.dumps(META).encode(), "resp.flac": RESP}, "missing_user_audio"),
        ({"flac": _flac(tone(0.3, 200)), "resp.flac": RESP}, "missing_json"),
        (
            {
                "flac": _flac(tone(0.3, 200)),
                "resp.flac": RESP,
                "json": json.dumps({k: v for k, v in META.items() if k != "content"}).encode(),
            },
            "invalid_meta",
        ),
        (
            {
                "flac": _flac(tone(0.3, 200)),
                "resp.flac": RESP,
                "json": json.dumps({**META, "category": "weather"}).encode(),
            },
            "invalid_meta",
        ),
        (
            {
                "flac": _flac(tone(0.3, 200)),
                "resp.flac": RESP,
                "json": json.dumps({**META, "style": "sleepy"}).encode(),
            },
            "invalid_meta",
        ),
        (
            {"flac": b"not audio at all", "resp.flac": RESP, "json": json.dumps(META).encode()},
            "bad_audio",
        ),
        (
            {
                "wav": _flac(np.zeros(0, np.float32), fmt="WAV"),
                "resp.flac": RESP,
                "json": json.dumps(META).encode(),
            },
            "bad_audio",
        ),
        (
            {
                "wav": _flac(
                    np.array([0.1, np.nan, 0.2] * 100, np.float32), fmt="WAV", subtype="FLOAT"
                ),
                "resp.flac": RESP,
                "json": json.dumps(META).encode(),
            },
            "bad_audio",
        ),
        (
            {"flac": _flac(tone(0.3, 200)), "json": json.dumps(META).encode()},
            "missing_assistant_audio",
        ),
    ],
    ids=[
        "no-audio",
        "no-json",
        "missing-field",
        "unknown-category",
        "unknown-style",
        "undecodable",
        "empty-audio",
        "nan-audio",
        "no-response-audio",
    ],
)
def test_corrupt_sample_is_skipped_and_counted(tmp_path, record, reason):
    _bad_set(tmp_path, [{"__key__": "bad", **record}])
    ds = ShardDataset(tmp_path, "train")
    assert keys(ds) == ["good0", "good1"]
    assert dict(ds.stats.skipped) == {reason: 1}


def test_8khz_stereo_audio_is_downmixed_resampled_and_counted(tmp_path):
    left = tone(0.5, 300, sr=8000)
    stereo = np.stack([left, left * 0.5], axis=1)
    _bad_set(
        tmp_path,
        [
            {
                "__key__": "stereo",
                "flac": _flac(stereo, sr=8000),
                "resp.flac": RESP,
                "json": json.dumps(META).encode(),
            }
        ],
    )
    ds = ShardDataset(tmp_path, "train", sample_rate=16000)
    out = {s.key: s for s in ds}
    assert set(out) == {"good0", "good1", "stereo"}
    assert out["stereo"].user_audio.ndim == 1 and len(out["stereo"].user_audio) == 8000
    assert ds.stats.repaired == {"downmix": 1, "resample": 1} and not ds.stats.skipped


def test_truncated_tar_is_skipped_and_counted_and_other_shards_still_read(tmp_path):
    write_tiny_set(tmp_path, n=6, maxcount=3)
    first = tmp_path / "train-000000.tar"
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    ds = ShardDataset(tmp_path, "train")
    got = keys(ds)
    assert {"s0003", "s0004", "s0005"} <= set(got) and len(got) < 6
    assert ds.stats.skipped["corrupt_shard"] == 1


def test_schema_errors_name_the_field():
    with pytest.raises(SchemaError, match="'content'"):
        parse_meta({k: v for k, v in META.items() if k != "content"}, "demo")
    with pytest.raises(SchemaError, match="score"):
        parse_meta({**META, "score": 7, "reason": ""}, "preference")


# ------------------------------------------------------------------ atomic writing


def test_interrupted_writer_leaves_no_shard_that_looks_whole(tmp_path):
    """A writer killed mid-shard (os._exit: no cleanup) leaves only a .partial file."""
    script = textwrap.dedent(f"""
        import os
        from paras2s_pl.testing import tiny_meta, tone
        from paras2s_pl.data.shards import ShardSetWriter
        w = ShardSetWriter({str(tmp_path)!r}, "train", "demo", maxcount=3)
        for i in range(5):
            w.write(f"k{{i}}", tiny_meta(i, "demo"), tone(0.5, 200), tone(0.3, 300))
        os._exit(1)
    """)
    subprocess.run([sys.executable, "-c", script], check=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["train-000000.tar", "train-000001.tar.partial"]
    with pytest.raises(FileNotFoundError, match="never finished"):
        ShardDataset(tmp_path, "train")
    assert len(keys(ShardDataset(sorted(map(str, tmp_path.glob("*.tar")))))) == 3


def test_exception_inside_writer_removes_unfinished_shard_and_writes_no_manifest(tmp_path):
    with pytest.raises(RuntimeError), ShardSetWriter(tmp_path, "train", "demo", maxcount=2) as w:
        for i in range(3):
            w.write(f"k{i}", tiny_meta(i, "demo"), tone(0.2, 200), tone(0.2, 300))
        raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-000000.tar"]


def test_existing_shards_are_refused_unless_overwrite(tmp_path):
    write_tiny_set(tmp_path, n=2)
    with pytest.raises(FileExistsError, match="--overwrite"):
        ShardSetWriter(tmp_path, "train", "demo")
    with ShardSetWriter(tmp_path, "train", "demo", overwrite=True) as w:
        w.write("only", tiny_meta(0, "demo"), tone(0.2, 200), tone(0.2, 300))
    assert keys(ShardDataset(tmp_path, "train")) == ["only"]


def test_writer_rejects_bad_keys_and_wrong_meta(tmp_path):
    with ShardSetWriter(tmp_path, "train", "demo") as w:
        with pytest.raises(ValueError, match="must not contain"):
            w.write("a.b", tiny_meta(0, "demo"), tone(0.2, 200), tone(0.2, 300))
        with pytest.raises(TypeError, match="DemoMeta"):
            w.write("a", tiny_meta(0, "prompt"), tone(0.2, 200))
        with pytest.raises(ValueError, match="assistant audio"):
            w.write("a", tiny_meta(0, "demo"), tone(0.2, 200))
        w.write("a", tiny_meta(0, "demo"), tone(0.2, 200), tone(0.2, 300))
        with pytest.raises(ValueError, match="duplicate"):
            w.write("a", tiny_meta(0, "demo"), tone(0.2, 200), tone(0.2, 300))


# ------------------------------------------------------------------ splitting, shuffling


@pytest.mark.parametrize("maxcount", [2, 100], ids=["shard-split", "sample-split"])
def test_workers_each_get_a_disjoint_part_and_together_everything(tmp_path, maxcount):
    write_tiny_set(tmp_path, n=8, maxcount=maxcount)
    ds = ShardDataset(tmp_path, "train")
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, collate_fn=lambda s: s.key
    )
    got = list(loader)
    assert sorted(got) == [f"s{i:04d}" for i in range(8)]


def test_node_split_is_disjoint_and_complete(tmp_path, monkeypatch):
    write_tiny_set(tmp_path, n=9, maxcount=3)
    seen = []
    for rank in range(2):
        monkeypatch.setattr("paras2s_pl.data.shards._dist_info", lambda r=rank: (r, 2))
        seen.append(keys(ShardDataset(tmp_path, "train")))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == [f"s{i:04d}" for i in range(9)]


def test_shuffle_is_seeded_and_changes_per_epoch(tmp_path):
    write_tiny_set(tmp_path, n=12, maxcount=4)
    a = ShardDataset(tmp_path, "train", shuffle=6, seed=1)
    b = ShardDataset(tmp_path, "train", shuffle=6, seed=1)
    first = keys(a)
    assert first == keys(b) and sorted(first) == sorted(keys(ShardDataset(tmp_path, "train")))
    a.set_epoch(1)
    assert keys(a) != first


def test_demo_meta_requires_response_fields():
    with pytest.raises(TypeError):
        DemoMeta(content="x", speaker="m1", split="train", category="age", style="adult")


# ------------------------------------------------------------------ hostile input


def _tar_set(root: Path, members: list[tuple[str, bytes]], schema: str = "demo") -> None:
    """``members`` (tar name, bytes) as written, by hand: no writer check stops a bad name.

    GNU format keeps a name's bytes as they are (a non-UTF-8 key stays non-UTF-8).
    """
    with tarfile.open(root / "train-000000.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    shards = [{"file": "train-000000.tar", "count": len(members)}]
    manifest = {"schema": schema, "sample_rate": 16000, "count": len(members), "shards": shards}
    (root / "train.manifest.json").write_text(json.dumps(manifest))


def _sample(key: str, meta: bytes | None = None, user: bytes | None = None):
    """The three members of one demo sample."""
    meta = meta if meta is not None else json.dumps(META).encode()
    user = user if user is not None else _flac(tone(0.2, 200))
    return [(f"{key}.flac", user), (f"{key}.resp.flac", RESP), (f"{key}.json", meta)]


def test_deeply_nested_json_is_skipped_and_counted(tmp_path):
    """2 KB of brackets (1,000 levels) raised RecursionError out of the reader."""
    nested = b"[" * 1000 + b"]" * 1000
    good = [f"g{i:02d}" for i in range(16)]
    members = [m for k in good[:5] for m in _sample(k)] + _sample("deep", meta=nested)
    _tar_set(tmp_path, members + [m for k in good[5:] for m in _sample(k)])
    ds = ShardDataset(tmp_path, "train")
    assert keys(ds) == good and dict(ds.stats.skipped) == {"invalid_meta": 1}
    prefs = PreferenceReader(tmp_path, "train")  # its own score check parses the json first
    assert list(prefs) == [] and prefs.stats.skipped["invalid_meta"] == 1
    assert scan_groups(prefs.urls) == {META["pair_id"]}  # every sample shares it


@pytest.mark.parametrize(
    "bad_key",
    ["../escaped", "/abs/escaped", "bad\udcffkey", "x" * 201],
    ids=["parent", "absolute", "non-utf8", "too-long"],
)
def test_key_that_cannot_name_a_file_is_skipped_and_counted(tmp_path, bad_key):
    members = _sample("good0") + _sample(bad_key) + _sample("good1")
    _tar_set(tmp_path, members)
    ds = ShardDataset(tmp_path, "train")
    assert keys(ds) == ["good0", "good1"] and dict(ds.stats.skipped) == {"invalid_key": 1}


def test_duplicate_key_and_repeated_member_are_skipped_and_counted(tmp_path):
    """The second ``a`` is skipped; a sample with two .json members is not yielded."""
    twice = _sample("two") + [("two.json", json.dumps(META).encode())]
    _tar_set(tmp_path, _sample("a") + _sample("b") + _sample("a") + twice + _sample("c"))
    ds = ShardDataset(tmp_path, "train")
    assert keys(ds) == ["a", "b", "c"]
    assert dict(ds.stats.skipped) == {"duplicate_key": 1, "duplicate_member": 1}


class _Tts:
    """Instant TTS stand-in: every reply is the same short tone."""

    def synthesize(self, text, tone_name, speaker):
        return tone(0.2, 300), 16000


def test_bench_respond_writes_only_inside_out_and_reads_every_safe_key(tmp_path):
    """A ``../`` key stopped ``bench respond``; an absolute one wrote outside ``--out``."""
    testset, out = tmp_path / "set", tmp_path / "deep" / "out"
    testset.mkdir()
    bad = ["../escaped", str(tmp_path / "abs"), "q\udcffx"]
    _tar_set(testset, [m for k in ["q0", *bad, "q1"] for m in _sample(k)])
    manifest = build_responses("topline", testset, "train", out, tts=_Tts(), progress=False)
    assert manifest["written"] == 2 and manifest["failed"] == 0
    rows = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["q0", "q1"]
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.flac"))
    assert written == ["deep/out/q0.flac", "deep/out/q1.flac"]
    for key in bad:  # defence in depth: the writer refuses what the reader let through
        with pytest.raises(ValueError, match="refused"):
            write_response(out, key, b"")


def _declaring(frames: int, sr: int = 16000) -> bytes:
    """A short silent FLAC whose header (STREAMINFO) declares ``frames`` samples."""
    data = bytearray(_flac(np.zeros(1600, np.float32), sr))
    at = 18  # "fLaC", block header (4), block and frame sizes (10): rate|ch|bits|36-bit total
    field = int.from_bytes(data[at : at + 8], "big")
    total = (1 << 36) - 1
    data[at : at + 8] = ((field & ~total) | frames).to_bytes(8, "big")
    return bytes(data)


@pytest.mark.parametrize("max_seconds", [30.0, None], ids=["max-30s", "default-bound"])
def test_audio_declaring_hours_is_refused_before_decoding(tmp_path, monkeypatch, max_seconds):
    """A 3-hour header costs 1 GB decoded: it is skipped from its header, never decoded."""
    three_hours = _declaring(3 * 3600 * 16000)
    assert sf.info(io.BytesIO(three_hours)).duration == 3 * 3600
    _tar_set(tmp_path, _sample("a") + _sample("long", user=three_hours) + _sample("b"))
    decoded: list[int] = []
    read = sf.SoundFile.read

    def spy(self, *args, **kwargs):
        decoded.append(self.frames)
        if self.frames > 60 * 16000:  # never allocate the big array, even before the fix
            raise MemoryError(f"decoded {self.frames} frames")
        return read(self, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    ds = ShardDataset(tmp_path, "train", max_seconds=max_seconds)
    assert keys(ds) == ["a", "b"] and dict(ds.stats.skipped) == {"too_long": 1}
    assert decoded and max(decoded) < 60 * 16000


@pytest.mark.parametrize("rate", [1, 500_000])
def test_absurd_sample_rate_is_skipped_and_counted(tmp_path, rate):
    """A 40 KB WAV declared at 1 Hz was resampled ×16,000 (1.6 GB)."""
    wav = _flac(np.zeros(100, np.float32), rate, fmt="WAV")
    _tar_set(tmp_path, _sample("a") + _sample("odd", user=wav) + _sample("b"))
    ds = ShardDataset(tmp_path, "train")
    assert keys(ds) == ["a", "b"] and dict(ds.stats.skipped) == {"bad_audio": 1}


@pytest.mark.timeout(60)  # a guard only: before the fix this spun forever
def test_repeat_over_a_set_without_usable_samples_raises_instead_of_spinning(tmp_path):
    _tar_set(tmp_path, [(f"k{i}.flac", _flac(tone(0.2, 200))) for i in range(3)])  # no json
    with pytest.raises(NoUsableDataError, match="no usable sample") as err:
        next(iter(ShardDataset(tmp_path, "train", repeat=True)))
    assert "missing_json" in str(err.value) and issubclass(NoUsableDataError, USER_ERRORS)
    write_tiny_set(tmp_path / "good", n=2)  # a usable set still repeats
    again = itertools.islice(ShardDataset(tmp_path / "good", "train", repeat=True), 5)
    assert [s.key for s in again] == ["s0000", "s0001"] * 2 + ["s0000"]
