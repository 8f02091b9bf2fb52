r"""Preference data from the judge (paper §4.2): ``paras2s curate preferences``.

For each labelled query of a pool (``--queries shards/demo --split train``), the policy
samples K responses at a high temperature; each response is decoded to audio with the
codec (speaking the generated text), perceived like the benchmark does (ASR ``C`` for the
transcript — or, ``--transcript policy``, the policy's own text stream, which saves the
ASR time in the mini world — and the style captioner ``S`` for the tone) and scored by the
judge with the guideline. Written to ``--out`` as ``preference`` shards: query audio,
response audio, the judge's ``score`` and ``reason``, the query's labels, the response
transcript and tone. Sample keys are ``<query key>_r<NNN>``.

**What the policy hears.** The query audio and, when the policy was trained with it (the
export's ``query_transcript``; ``--policy_query_transcript`` overrides it with a one-line
warning), the query transcript ``t_i`` on its text stream. ``t_i`` is the query's labelled
``content``, as in the paper, where each labelled query ``(c_i, s_i, w_i)`` becomes
``(a_i, t_i)`` (§4.2); ASR transcripts are for unlabeled speech (GRPO, the bench).
``--transcript`` is another thing: where the *response's* transcript for the judge comes from.

Example (mini world, offline rubric judge)::

    paras2s curate preferences --policy runs/mini/sft_policy --queries shards/demo \
        --split train --k 8 --judge rubric --transcript policy --out shards/prefs

**Budget** (Fig. 2b): ``--num_queries N`` / ``--hours H`` / ``--exclude FILE`` /
``--offset P`` select whole contrasting pairs from the pool in a seeded order
(:mod:`paras2s_pl.curate.budget`); the selection is saved as ``<split>.selection.json``.

**Resumable.** Queries are processed in parts of ``--part_queries``; each part is written
as its own shard set ``<split>.partNNNNN-*.tar`` (atomically, by
:class:`~paras2s_pl.data.shards.ShardSetWriter`) and then recorded, one line per finished
query, in ``<split>.progress.jsonl``; ``<split>.manifest.json`` (what readers open) is
rebuilt from the finished parts after each one. A rerun with the same arguments skips the
recorded queries; the part that was cut off is redone, and because each query's sampling is
seeded by (``--seed``, query key) its responses come out the same, so the perception cache
(``<split>.perception.jsonl``) and the judge cache (``<out>/cache``, SQLite) answer them
without new ASR or judge calls. A query with a judge *request error* is not recorded (a
rerun retries it); responses the judge could not score (parse failures), empty responses
and undecodable audio are skipped and counted under ``skipped`` in the manifest.

**Manifest** extras: ``score_histogram`` and ``score_histogram_by_category``,
``mean_score_by_category``, ``queries`` (selected / done), ``skipped`` by reason,
``seconds_per_query`` and the provenance (policy, K, sampling, judge and whether it is a
stand-in, ASR, captioner, seed).

**Speed** (mini SFT policy, rubric judge, 2 CPU cores, one torch thread, ``max_new_tokens``
200): ``--transcript policy`` 2.5 s/query at K=8 (24 queries/min) and 7.8 s/query at K=32
(7.7/min); ``--transcript asr`` (PocketSphinx) 8.2 s/query at K=8 (7.3/min). On a busy
machine two torch threads made generation ~9x slower, hence the CLI's ``--threads 1``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from paras2s_pl.audio.io import resample
from paras2s_pl.bench.cache import CachedJudge
from paras2s_pl.bench.evaluate import Perception, audio_sha1, part_id, part_name
from paras2s_pl.bench.judges import Judge, Judgement
from paras2s_pl.bench.prompt import JudgeItem
from paras2s_pl.curate.bookkeeping import (
    RATE,
    append_progress,
    load_selection,
    merged_manifest,
    read_progress,
    reset,
)
from paras2s_pl.curate.budget import read_exclude
from paras2s_pl.data.schema import PreferenceMeta, QueryMeta
from paras2s_pl.data.shards import ShardDataset, ShardSetWriter, read_manifest
from paras2s_pl.errors import UsageError
from paras2s_pl.models.speech_policy import (  # noqa: F401  (re-exported for callers)
    CURATION_SAMPLING,
    Policy,
    load_policy,
    with_sampling,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ curation
@dataclass
class Perceivers:
    """The benchmark's C, S and judge, plus where the transcript comes from."""

    asr: Any
    captioner: Any
    judge: Judge
    transcript: str = "asr"  # or "policy"

    def __post_init__(self) -> None:
        if self.transcript not in ("asr", "policy"):
            raise UsageError(f"--transcript {self.transcript!r}; expected 'asr' or 'policy'")

    def perceiver_id(self) -> str:
        """Cache id of the (C, S) pair in use."""
        c = part_id(self.asr) if self.transcript == "asr" else "policy-text"
        return f"{c}+{part_id(self.captioner)}"


def query_meta(meta: QueryMeta) -> QueryMeta:
    """The query fields of a query/demo/preference record (a demo's reply is not kept)."""
    return QueryMeta(**{f.name: getattr(meta, f.name) for f in dataclasses.fields(QueryMeta)})


def _query_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha1(f"{seed}:{key}".encode()).digest()[:6], "big")


def _responses(policy: Policy, sample, k: int, seed: int, skipped: Counter):
    """Sample, decode and keep the usable responses of one query: ``(index, wav, text)``."""
    out = []
    for i, (codes, text) in enumerate(
        policy.respond(
            sample.user_audio,
            sample.sample_rate,
            k,
            _query_seed(seed, sample.key),
            sample.meta.content,
        )
    ):
        if codes.numel() == 0:
            skipped["empty_response_audio"] += 1
            continue
        try:
            wav, sr = policy.codec.decode(codes, text or None)
        except Exception as err:  # a decoder failure loses one response, not the run
            skipped["decode_error"] += 1
            log.warning("could not decode response %d of %s: %r", i, sample.key, err)
            continue
        wav = resample(np.asarray(wav, dtype=np.float32), sr, RATE)
        if wav.size == 0 or not np.isfinite(wav).all():
            skipped["bad_response_audio"] += 1
            continue
        out.append((i, wav, text))
    return out


def _perceive(p: Perceivers, cache: Perception, key: str, rows) -> list[tuple[str, str]]:
    """(transcript, tone) per response, from the cache when the same audio was seen."""
    shas = [audio_sha1(w) for _, w, _ in rows]
    todo = [j for j, s in enumerate(shas) if (f"{key}_r{rows[j][0]:03d}", s) not in cache.known]
    if todo:
        wavs = [rows[j][1] for j in todo]
        texts = (
            p.asr.transcribe(wavs, RATE) if p.transcript == "asr" else [rows[j][2] for j in todo]
        )
        tones = p.captioner.describe(wavs, RATE)
        cache.add(
            [
                (f"{key}_r{rows[j][0]:03d}", shas[j], t, n)
                for j, t, n in zip(todo, texts, tones, strict=True)
            ]
        )
    return [cache.known[(f"{key}_r{i:03d}", s)] for (i, _, _), s in zip(rows, shas, strict=True)]


@dataclass
class _Run:
    """One curation run: where it writes, who answers and who judges."""

    out: Path
    split: str
    policy: Policy
    perceivers: Perceivers
    judge: Judge
    seen: Perception
    k: int
    seed: int
    provenance: dict[str, Any]
    selected: int
    bar: Any

    def part(self, index: int, samples: Sequence[Any]) -> None:
        """Curate, write and record one part of queries, then refresh the merged manifest."""
        t0 = time.time()
        todo = []  # (sample, rows, heard, skipped)
        for sample in samples:
            skipped: Counter = Counter()
            rows = _responses(self.policy, sample, self.k, self.seed, skipped)
            todo.append(
                (sample, rows, _perceive(self.perceivers, self.seen, sample.key, rows), skipped)
            )
            self.bar.update(1)
        items = [
            JudgeItem.from_meta(f"{s.key}_r{i:03d}", s.meta, t, n)
            for s, rows, heard, _ in todo
            for (i, _, _), (t, n) in zip(rows, heard, strict=True)
        ]
        judged = dict(zip([it.key for it in items], self.judge.score(items), strict=True))
        seconds = round((time.time() - t0) / max(len(samples), 1), 3)
        name = f"{self.split}.part{index:05d}"
        with ShardSetWriter(
            self.out,
            name,
            "preference",
            sample_rate=RATE,
            overwrite=True,
            provenance=self.provenance,
        ) as writer:
            records = [self._write(writer, name, seconds, judged, *entry) for entry in todo]
        append_progress(self.out, self.split, [r for r in records if r is not None])
        merged_manifest(
            self.out,
            self.split,
            read_progress(self.out, self.split),
            self.selected,
            self.provenance,
        )

    def _write(
        self,
        writer: ShardSetWriter,
        name: str,
        seconds: float,
        judged: dict[str, Judgement],
        sample,
        rows,
        heard,
        skipped: Counter,
    ):
        """Write one query's judged responses; its progress record, or None to retry it."""
        js = [judged[f"{sample.key}_r{i:03d}"] for i, _, _ in rows]
        if any(j.error for j in js):  # not recorded: a rerun retries it
            log.warning("judge request failed for %s; it will be retried", sample.key)
            return None
        scores = []
        for (i, wav, _), (transcript, tone), j in zip(rows, heard, js, strict=True):
            if j.score is None:
                skipped["judge_parse_failed"] += 1
                continue
            meta = PreferenceMeta(
                **asdict(sample.meta),
                response_text=transcript,
                response_tone=tone,
                score=j.score,
                reason=j.reason,
            )
            writer.write(f"{sample.key}_r{i:03d}", meta, sample.user_audio, wav)
            scores.append(j.score)
        m = sample.meta
        return {
            "key": sample.key,
            "pair_id": m.pair_id,
            "category": m.category,
            "style": m.style,
            "part": name,
            "scores": scores,
            "skipped": dict(skipped),
            "seconds": seconds,
        }


def curate_preferences(
    policy: Policy,
    queries: str | Path,
    out: str | Path,
    perceivers: Perceivers,
    split: str = "train",
    k: int = 32,
    num_queries: int | None = None,
    hours: float | None = None,
    exclude: str | Path | Sequence[str] | None = None,
    offset: int = 0,
    seed: int = 0,
    part_queries: int = 16,
    cache: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write (or resume) a preference shard set; returns its manifest (module docstring)."""
    out, queries = Path(out), Path(queries)
    if k < 1 or part_queries < 1:
        raise UsageError(f"--k {k} and --part_queries {part_queries}: each must be >= 1")
    if overwrite:
        reset(out, split)
    if read_manifest(queries, split)["schema"] == "prompt":
        raise UsageError(
            f"{queries}/{split} has no labels (schema 'prompt'); the judge needs "
            "labelled queries (a query or demo set)"
        )
    how = {
        "queries": str(queries.resolve()),
        "split": split,
        "num_queries": num_queries,
        "hours": hours,
        "seed": seed,
        "offset": offset,
        "exclude": sorted(read_exclude(exclude)),
    }
    keys = load_selection(queries, split, out, how, exclude, overwrite)
    done_rows = read_progress(out, split)
    done = {row["key"] for row in done_rows if "key" in row}
    provenance = {
        "command": "paras2s curate preferences",
        "policy": policy.path,
        "k": k,
        "seed": seed,
        "sampling": asdict(policy.sampling),
        "query_transcript": policy.query_transcript,
        "query_transcript_source": "shard" if policy.query_transcript else None,
        "judge": perceivers.judge.name,
        "judge_stand_in": bool(getattr(perceivers.judge, "stand_in", False)),
        "transcript": perceivers.transcript,
        "asr": part_name(perceivers.asr) if perceivers.transcript == "asr" else None,
        "captioner": part_name(perceivers.captioner),
        "selection": how,
    }
    judge: Judge = CachedJudge(perceivers.judge, out / "cache") if cache else perceivers.judge
    seen = Perception(out / f"{split}.perception.jsonl", perceivers.perceiver_id())
    wanted = set(keys) - done
    bar = tqdm(
        total=len(keys),
        initial=len(keys) - len(wanted),
        desc="curate",
        unit="query",
        disable=not progress,
    )
    index = 1 + max(
        (int(r["part"].rsplit("part", 1)[1]) for r in done_rows if "part" in r), default=-1
    )
    run = _Run(out, split, policy, perceivers, judge, seen, k, seed, provenance, len(keys), bar)
    try:
        batch = []
        reader = ShardDataset(queries, split=split, sample_rate=RATE) if wanted else []
        for sample in reader:
            if sample.key not in wanted or not isinstance(sample.meta, QueryMeta):
                continue
            sample.meta = query_meta(sample.meta)
            batch.append(sample)
            if len(batch) == part_queries:
                run.part(index, batch)
                index, batch = index + 1, []
        if batch:
            run.part(index, batch)
    finally:
        bar.close()
        if isinstance(judge, CachedJudge):
            judge.close()
    manifest = merged_manifest(out, split, read_progress(out, split), len(keys), provenance)
    missing = len(keys) - manifest["queries"]["done"]
    if missing:
        log.warning(
            "%d selected queries are not done (judge errors or unreadable); rerun "
            "the same command to retry them",
            missing,
        )
    return manifest
