"""An on-disk cache in front of any judge: a crash or Ctrl-C loses no finished call."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from paras2s_pl.bench.judges import Judge, Judgement, OnResult, Usage
from paras2s_pl.bench.prompt import JudgeItem, prompt_sha256
from paras2s_pl.errors import UsageError

log = logging.getLogger(__name__)


class CachedJudge:
    """Any judge behind an SQLite cache keyed by ``(judge.name, sha256(messages))``.

    Format: ``<cache_dir>/judgements.sqlite``, WAL journal, ``synchronous=FULL``, one
    autocommitted row per finished call — written from ``on_result`` the moment a call
    ends, so SIGKILL or Ctrl-C loses none. Hits come back with ``cached=True``. Parse
    failures are cached too (a rerun does not pay again) unless ``retry_failures``; request
    errors (``error`` set) are never cached. Identical prompts in one run are sent once.

    On an exception or Ctrl-C the wrapped judge finishes its requests in flight before
    ``score`` re-raises (see :meth:`~paras2s_pl.bench.judges.OpenAIJudge.score`), so
    closing the cache in a ``finally`` keeps their answers. Only an answer arriving after
    :meth:`close` (a run aborted by a second Ctrl-C) is lost, with a warning.
    """

    SCHEMA = """CREATE TABLE IF NOT EXISTS judgements (
        judge TEXT NOT NULL, prompt_sha256 TEXT NOT NULL, item_key TEXT NOT NULL,
        score INTEGER, reason TEXT NOT NULL, raw TEXT NOT NULL, parse_failed INTEGER NOT NULL,
        attempts INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL, created REAL NOT NULL,
        PRIMARY KEY (judge, prompt_sha256))"""
    COLUMNS = ("score", "reason", "raw", "parse_failed", "attempts", "prompt_tokens",
               "completion_tokens")  # fmt: skip

    def __init__(self, judge: Judge, cache_dir: str | Path, retry_failures: bool = False,
                 filename: str = "judgements.sqlite") -> None:  # fmt: skip
        self.judge, self.retry_failures = judge, retry_failures
        self.path = Path(cache_dir) / filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._closed = False
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=30.0)  # fmt: skip
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(self.SCHEMA)
            self._db.execute("SELECT count(*) FROM judgements").fetchone()
        except sqlite3.DatabaseError as err:  # not SQLite, or damaged: never overwrite it
            self._db.close()
            raise UsageError(
                f"judge cache {self.path} is unreadable ({err}); move it away to start a new "
                "cache (its answers would be bought again), or pass --no_cache"
            ) from None

    @property
    def name(self) -> str:
        """The wrapped judge's name."""
        return self.judge.name

    def __repr__(self) -> str:
        return f"CachedJudge({self.judge!r}, path={str(self.path)!r})"

    def close(self) -> None:
        """Close the database (finished rows are already on disk)."""
        with self._lock:
            self._closed = True
            self._db.close()

    def __enter__(self) -> CachedJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, sha: str) -> Judgement | None:
        """The cached judgement of a prompt hash, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(self.COLUMNS)} FROM judgements "
                "WHERE judge = ? AND prompt_sha256 = ?", (self.name, sha)).fetchone()  # fmt: skip
        if row is None:
            return None
        score, reason, raw, failed, attempts, p_tok, c_tok = row
        return Judgement(score=score, reason=reason, raw=raw, parse_failed=bool(failed),
                         attempts=attempts, usage=Usage(p_tok, c_tok), cached=True)  # fmt: skip

    def put(self, sha: str, key: str, j: Judgement) -> None:
        """Commit one finished judgement (errors are not stored)."""
        if j.error is not None:
            return
        u = j.usage
        values = (self.name, sha, key, j.score, j.reason, j.raw, int(j.parse_failed),
                  j.attempts, u.prompt_tokens, u.completion_tokens, time.time())  # fmt: skip
        with self._lock:
            if self._closed:  # a straggler of an aborted run: say so instead of raising
                log.warning("judge %s: answer for %s arrived after the cache was closed; "
                            "not saved", self.name, key)  # fmt: skip
                return
            self._db.execute(f"INSERT OR REPLACE INTO judgements VALUES ({', '.join('?' * 11)})",
                             values)  # fmt: skip

    def score(self, items: Sequence[JudgeItem], on_result: OnResult | None = None
              ) -> list[Judgement]:  # fmt: skip
        """Serve hits from disk, send the misses (each unique prompt once) to the judge."""
        items = list(items)
        shas = [prompt_sha256(it) for it in items]
        results: list[Judgement | None] = [None] * len(items)
        todo: dict[str, list[int]] = {}  # prompt hash → item indices sharing it
        for i, sha in enumerate(shas):
            hit = self.get(sha) if sha not in todo else None
            if hit is not None and not (hit.parse_failed and self.retry_failures):
                results[i] = hit
                if on_result is not None:
                    on_result(i, hit)
            else:
                todo.setdefault(sha, []).append(i)
        unique = [items[indices[0]] for indices in todo.values()]
        groups = list(todo.values())
        n_todo = sum(map(len, groups))
        log.info("judge %s: %d cached, %d to score (%d unique prompts)", self.name,
                 len(items) - n_todo, n_todo, len(unique))  # fmt: skip

        def store(j: int, judgement: Judgement) -> None:
            first = groups[j][0]
            self.put(shas[first], items[first].key, judgement)
            for i in groups[j]:
                results[i] = judgement
                if on_result is not None:
                    on_result(i, judgement)

        if unique:
            returned = self.judge.score(unique, on_result=store)
            for j, judgement in enumerate(returned):  # a judge that skipped on_result
                if results[groups[j][0]] is None:
                    store(j, judgement)
        return results  # type: ignore[return-value]
