"""Score one system on a test set: response → ASR ``C`` + captioner ``S`` → judge (paper §3.2).

For each test query (a ``query``/``demo``/``preference`` shard sample) the system's response
is looked up by sample key in a :class:`~paras2s_pl.bench.responses.ResponseSource`,
transcribed and captioned in batches, and judged with the guideline prompt built from
the query's ground-truth content and label plus the response's transcript and tone.

Written to ``<out_dir>/<system>/``:

* ``scores.jsonl`` — one row per test query, in test-set order: ``key, system, category,
  style, pair_id, content, transcript, tone, score, reason, raw, status, parse_failed,
  error, cached``. ``status`` is ``scored``, ``missing`` (no response), ``parse_failed``
  (the judge never gave a 1..5 score) or ``error`` (bad response audio, failed request).
  Only ``scored`` rows have a score; the others are counted in every report, never
  averaged in.
* ``summary.json`` — per-category counts and means, the judge (and whether it is a
  stand-in), its usage and cost, the parts used, where the responses came from, timings.
* ``perception.jsonl`` — the C/S outputs keyed by (query key, response audio hash, ASR and
  captioner names + settings hash, see :func:`part_id`), appended per batch: a rerun
  (after a crash, or with another judge) transcribes nothing twice. ``recompute=True``
  ignores it (do so after changing a backend's *code*, e.g. the captioner's rules).

Judge calls go through :class:`~paras2s_pl.bench.cache.CachedJudge` at
``<out_dir>/cache`` (one SQLite file shared by all systems), so a crash or Ctrl-C loses no
finished call and a rerun sends only what is left. A stand-in judge (``stand_in = True``:
the offline rubric, free and instant) is not cached, so edits to its rules always show.

Run: ``paras2s bench run --testset shards/demo --responses runs/responses/topline``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from paras2s_pl.audio.io import AudioError, resample
from paras2s_pl.bench.cache import CachedJudge
from paras2s_pl.bench.judges import Judge, Judgement
from paras2s_pl.bench.prompt import JudgeItem
from paras2s_pl.bench.responses import ResponseSource
from paras2s_pl.data.schema import QueryMeta
from paras2s_pl.data.shards import ShardDataset
from paras2s_pl.errors import UsageError

if TYPE_CHECKING:
    from paras2s_pl.audio.asr import ASR
    from paras2s_pl.audio.style import StyleCaptioner

log = logging.getLogger(__name__)

RATE = 16000  # responses are resampled to this rate before C and S
STATUSES = ("scored", "missing", "parse_failed", "error")
ROW_FIELDS = (
    "key",
    "system",
    "category",
    "style",
    "pair_id",
    "content",
    "transcript",
    "tone",
    "score",
    "reason",
    "raw",
    "status",
    "parse_failed",
    "error",
    "cached",
)


def part_name(obj: Any) -> str:
    """A backend's name for summaries: its ``name``, else its class name."""
    return str(getattr(obj, "name", None) or type(obj).__name__)


def part_id(obj: Any) -> str:
    """:func:`part_name` plus a hash of the backend's public settings.

    The settings are the attributes not starting with ``_``, so another Whisper checkpoint
    or LM weight gives a new id (and fresh transcripts).
    """
    public = {k: v for k, v in sorted(vars(obj).items()) if not k.startswith("_")}
    settings = json.dumps(public, default=repr, sort_keys=True)
    return f"{part_name(obj)}#{hashlib.sha1(settings.encode()).hexdigest()[:8]}"


def load_queries(testset: str | Path, split: str) -> tuple[list[tuple[str, QueryMeta]], dict]:
    """``[(key, meta)]`` of the labelled test set, and what the reader skipped."""
    ds = ShardDataset(testset, split=split, sample_rate=RATE)
    queries = []
    for sample in ds:
        if not isinstance(sample.meta, QueryMeta):
            raise UsageError(
                f"{testset}/{split}: samples have no category/style labels "
                "(schema 'prompt'); the bench needs a query or demo set"
            )
        queries.append((sample.key, sample.meta))
    keys = [k for k, _ in queries]
    if len(set(keys)) != len(keys):
        dups = sorted(k for k, n in Counter(keys).items() if n > 1)[:5]
        raise ValueError(f"{testset}/{split}: duplicate sample keys {dups}; keys must be unique")
    return queries, ds.stats.as_dict()


class Perception:
    """The append-only C/S cache ``perception.jsonl`` (see the module docstring)."""

    def __init__(self, path: Path, perceiver: str, recompute: bool = False) -> None:
        self.path, self.perceiver = path, perceiver
        self.known: dict[tuple[str, str], tuple[str, str]] = {}
        if path.exists() and not recompute:
            for line in path.read_text("utf-8", errors="replace").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash: redo that one
                    continue
                if row.get("perceiver") == perceiver:
                    self.known[(row["key"], row["audio_sha1"])] = (row["transcript"], row["tone"])
            if not path.read_bytes().endswith(b"\n"):  # end a line cut by a crash
                with path.open("a", encoding="utf-8") as f:
                    f.write("\n")
        elif recompute:
            path.unlink(missing_ok=True)

    def add(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        """Append ``(key, sha1, transcript, tone)`` rows and fsync."""
        with self.path.open("a", encoding="utf-8") as f:
            for key, sha, transcript, tone in rows:
                self.known[(key, sha)] = (transcript, tone)
                row = dict(key=key, audio_sha1=sha, perceiver=self.perceiver,
                           transcript=transcript, tone=tone)  # fmt: skip
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def audio_sha1(wav: np.ndarray) -> str:
    """Hash of the 16 kHz float32 samples (what C and S see)."""
    return hashlib.sha1(np.ascontiguousarray(wav, dtype=np.float32).tobytes()).hexdigest()


def perceive(
    queries: Sequence[tuple[str, QueryMeta]],
    responses: ResponseSource,
    asr: ASR,
    captioner: StyleCaptioner,
    cache: Perception,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, tuple[str, str] | str | None]:
    """Per key: ``(transcript, tone)``, None (missing) or an error message (bad audio)."""
    out: dict[str, tuple[str, str] | str | None] = {}
    bar = tqdm(total=len(queries), desc="C+S responses", unit="resp", disable=not progress)
    for start in range(0, len(queries), batch_size):
        todo: list[tuple[str, str, np.ndarray]] = []
        for key, _ in queries[start : start + batch_size]:
            try:
                got = responses.get(key)
            except AudioError as err:
                out[key] = f"response audio: {err}"
                continue
            if got is None:
                out[key] = None
                continue
            wav = resample(got[0], got[1], RATE)
            sha = audio_sha1(wav)
            if (key, sha) in cache.known:
                out[key] = cache.known[(key, sha)]
            else:
                todo.append((key, sha, wav))
        if todo:
            wavs = [w for _, _, w in todo]
            texts = asr.transcribe(wavs, RATE)
            tones = captioner.describe(wavs, RATE)
            cache.add([(k, s, t, n) for (k, s, _), t, n in zip(todo, texts, tones, strict=True)])
            out.update({k: (t, n) for (k, _, _), t, n in zip(todo, texts, tones, strict=True)})
        bar.update(min(batch_size, len(queries) - start))
    bar.close()
    return out


def make_row(
    key: str, meta: QueryMeta, system: str, heard: Any, judgement: Judgement | None
) -> dict[str, Any]:
    """One ``scores.jsonl`` row (see the module docstring)."""
    row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
    row.update(
        key=key,
        system=system,
        category=meta.category,
        style=meta.style,
        pair_id=meta.pair_id,
        content=meta.content,
        parse_failed=False,
        cached=False,
    )
    if heard is None:
        return {**row, "status": "missing"}
    if isinstance(heard, str):
        return {**row, "status": "error", "error": heard}
    row.update(transcript=heard[0], tone=heard[1])
    assert judgement is not None
    status = "error" if judgement.error else "parse_failed" if judgement.parse_failed else "scored"
    return {
        **row,
        "score": judgement.score,
        "reason": judgement.reason,
        "raw": judgement.raw,
        "status": status,
        "parse_failed": judgement.parse_failed,
        "error": judgement.error,
        "cached": judgement.cached,
    }


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts by status and the mean of scored rows, overall and per category."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["category"]].append(row)

    def stats(rs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        counts = Counter(r["status"] for r in rs)
        scores = [r["score"] for r in rs if r["status"] == "scored"]
        return {
            "n": len(rs),
            **{s: counts.get(s, 0) for s in STATUSES},
            "mean": round(float(np.mean(scores)), 4) if scores else None,
            "cached": sum(bool(r["cached"]) for r in rs),
        }

    return {"all": stats(rows), "categories": {c: stats(rs) for c, rs in sorted(groups.items())}}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def evaluate(
    testset: str | Path,
    split: str,
    responses: ResponseSource,
    system: str,
    asr: ASR,
    captioner: StyleCaptioner,
    judge: Judge,
    out_dir: str | Path,
    cache: bool = True,
    recompute: bool = False,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``system``'s responses to every query of ``testset``/``split``.

    Args:
        testset: shard directory of the labelled queries.
        split: its split.
        responses: the system's responses by query key.
        system: the system's name (a row of the tables, the output sub-directory).
        asr: ``C``, an :class:`~paras2s_pl.audio.asr.ASR`.
        captioner: ``S``, a :class:`~paras2s_pl.audio.style.StyleCaptioner`.
        judge: a :class:`~paras2s_pl.bench.judges.Judge`.
        out_dir: the runs directory; output goes to ``<out_dir>/<system>/``.
        cache: cache judge calls in ``<out_dir>/cache`` (stand-in judges never are).
        recompute: ignore ``perception.jsonl`` and transcribe/caption everything again.
        batch_size: responses per ASR/captioner call.
        progress: show progress bars.

    Returns:
        The summary (also written to ``summary.json``).
    """
    if not system or "/" in system or system.startswith("."):
        raise UsageError(f"--system {system!r} must be a plain directory name")
    out_dir = Path(out_dir)
    out = out_dir / system
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    queries, read_stats = load_queries(testset, split)
    perceiver = f"{part_id(asr)}+{part_id(captioner)}"
    perception = Perception(out / "perception.jsonl", perceiver, recompute)
    heard = perceive(queries, responses, asr, captioner, perception, batch_size, progress)
    t1 = time.time()
    items = [
        JudgeItem.from_meta(key, meta, *heard[key])
        for key, meta in queries
        if isinstance(heard[key], tuple)
    ]
    stand_in = bool(getattr(judge, "stand_in", False))
    scorer: Judge = CachedJudge(judge, out_dir / "cache") if cache and not stand_in else judge
    try:
        judged = dict(zip([it.key for it in items], scorer.score(items), strict=True))
    finally:
        if isinstance(scorer, CachedJudge):
            scorer.close()
    t2 = time.time()
    rows = [make_row(key, meta, system, heard[key], judged.get(key)) for key, meta in queries]
    _write_atomic(
        out / "scores.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )
    meter = getattr(judge, "meter", None)
    summary = {
        "system": system,
        "testset": str(Path(testset).resolve()),
        "split": split,
        "responses": responses.describe() if hasattr(responses, "describe") else repr(responses),
        "judge": {
            "name": judge.name,
            "class": type(judge).__name__,
            "stand_in": stand_in,
            "usage": meter.summary() if meter is not None else None,
        },
        "asr": part_name(asr),
        "captioner": part_name(captioner),
        "testset_read": read_stats,
        **summarize(rows),
        "seconds": {
            "perception": round(t1 - t0, 2),
            "judge": round(t2 - t1, 2),
            "total": round(time.time() - t0, 2),
        },
    }
    _write_atomic(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    counts = summary["all"]
    log.info(
        "bench %s: %d queries, %d scored (mean %s), %d missing, %d parse failures, %d errors",
        system,
        counts["n"],
        counts["scored"],
        counts["mean"],
        counts["missing"],
        counts["parse_failed"],
        counts["error"],
    )
    return summary
