"""Shard read throughput: decoded samples vs raw tar iteration of the same files.

Run after ``paras2s shards build-demo``::

    python benchmarks/shard_read.py --root shards/demo --split train --rate 16000 --repeats 3

Prints samples/s and MB/s (of tar bytes) for both paths and their ratio: the cost of
flac decoding, validation and resampling over merely reading the tar members.
"""

from __future__ import annotations

import argparse
import tarfile
import time
from pathlib import Path

from paras2s_pl.data.shards import ShardDataset, read_manifest


def raw_pass(paths: list[Path]) -> int:
    n = 0
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile():
                    tar.extractfile(member).read()
                    n += member.name.endswith(".json")
    return n


def decoded_pass(root: str, split: str, rate: int) -> int:
    ds = ShardDataset(root, split, sample_rate=rate)
    n = sum(1 for _ in ds)
    assert not ds.stats.num_skipped, ds.stats.as_dict()
    return n


def best_of(fn, repeats: int) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t)
    return min(times), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="shards/demo")
    ap.add_argument("--split", default="train")
    ap.add_argument("--rate", type=int, default=16000, help="sample rate to decode to")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    manifest = read_manifest(args.root, args.split)
    paths = [Path(args.root) / s["file"] for s in manifest["shards"]]
    megabytes = sum(p.stat().st_size for p in paths) / 1e6
    raw_t, raw_n = best_of(lambda: raw_pass(paths), args.repeats)
    dec_t, dec_n = best_of(lambda: decoded_pass(args.root, args.split, args.rate), args.repeats)
    print(
        f"{args.root}/{args.split}: {manifest['count']} samples, {megabytes:.1f} MB, "
        f"{manifest['hours'] * 60:.1f} min of query audio, stored at "
        f"{manifest['sample_rate']} Hz, decoded to {args.rate} Hz (best of {args.repeats})"
    )
    print(f"| {'path':<22} | {'samples/s':>10} | {'MB/s':>8} | {'seconds':>8} |")
    print(f"|{'-' * 24}|{'-' * 12}|{'-' * 10}|{'-' * 10}|")
    for name, t, n in (
        ("raw tar iteration", raw_t, raw_n),
        ("decoded (ShardDataset)", dec_t, dec_n),
    ):
        print(f"| {name:<22} | {n / t:>10.1f} | {megabytes / t:>8.1f} | {t:>8.3f} |")
    print(f"decode overhead: raw is {dec_t / raw_t:.1f}x faster than decoded")


if __name__ == "__main__":
    main()
