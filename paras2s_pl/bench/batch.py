"""The OpenAI Batch API judge: write one request line per item, read the results back.

Offline core: :meth:`OpenAIBatchJudge.write_requests` and :meth:`~OpenAIBatchJudge.read_results`
(every ``custom_id`` mapped back to its item; missing, failed and unknown ids reported in a
:class:`BatchReport`); ``submit``/``poll`` talk to the API. Tested in ``tests/test_judges.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from paras2s_pl.bench.judges import (
    BATCH_DISCOUNT,
    Judgement,
    OnResult,
    UsageMeter,
    _make_client,
    _scrub,
    _usage_of,
)
from paras2s_pl.bench.parse import parse_score
from paras2s_pl.bench.prompt import JudgeItem, build_messages
from paras2s_pl.jsonl import read_jsonl

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What came back from a batch: ids missing, failed (status ≠ 200 or error), unparsed."""

    total: int = 0
    scored: int = 0
    missing: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    parse_failed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # custom_ids not among the items
    duplicates: list[str] = field(default_factory=list)  # custom_ids answered twice (1st kept)

    @property
    def counts(self) -> dict[str, int]:
        """Sizes of every list, plus total and scored."""
        return {"total": self.total, "scored": self.scored,
                **{f.name: len(getattr(self, f.name)) for f in dataclasses.fields(self)
                   if f.name not in ("total", "scored")}}  # fmt: skip

    @property
    def retry_keys(self) -> list[str]:
        """Item keys worth resubmitting: missing, failed and parse-failed."""
        return self.missing + self.failed + self.parse_failed


class BatchResults(list):
    """The judgements of a batch (a ``list[Judgement]`` in item order) with its ``report``."""

    def __init__(self, judgements: list[Judgement], report: BatchReport) -> None:
        super().__init__(judgements)
        self.report = report


def check_unique_keys(items: Sequence[JudgeItem]) -> dict[str, int]:
    """Map key → index; raises ``ValueError`` naming duplicated keys (custom ids)."""
    index: dict[str, int] = {}
    dups = sorted({it.key for i, it in enumerate(items) if index.setdefault(it.key, i) != i})
    if dups:
        more = " …" if len(dups) > 10 else ""
        raise ValueError(f"duplicate JudgeItem keys {dups[:10]}{more}: a Batch API custom_id "
                         "must be unique; make the keys unique")  # fmt: skip
    return index


class OpenAIBatchJudge:
    """The guideline through the OpenAI Batch API (half price, results within 24 h).

    The core is offline: :meth:`write_requests` → (upload, wait) → :meth:`read_results`.
    :meth:`submit`, :meth:`poll` and :meth:`score` drive the upload and wait with the
    client's files/batches API. No re-asks are possible: parse failures and failed or
    missing ids are listed in the :class:`BatchReport` (``retry_keys``) for a rerun.
    """

    def __init__(self, model: str = "gpt-4.1", base_url: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", temperature: float = 0.0,
                 max_tokens: int | None = 256, workdir: str | None = None,
                 poll_interval: float = 60.0, timeout: float = 60.0,
                 prices: dict[str, tuple[float, float]] | None = None,
                 name: str | None = None) -> None:  # fmt: skip
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.temperature, self.max_tokens = temperature, max_tokens
        self.workdir, self.poll_interval, self.timeout = workdir, poll_interval, timeout
        self.name = name or model
        self.meter = UsageMeter(model, prices, discount=BATCH_DISCOUNT)
        self._client: openai.OpenAI | None = None

    def __repr__(self) -> str:
        return (f"OpenAIBatchJudge(name={self.name!r}, model={self.model!r}, "
                f"base_url={self.base_url!r}, api_key_env={self.api_key_env!r})")  # fmt: skip

    @property
    def client(self) -> openai.OpenAI:
        """The ``openai.OpenAI`` client, made on first use."""
        if self._client is None:
            self._client = _make_client(self.base_url, self.api_key_env, self.timeout)
        return self._client

    def request(self, item: JudgeItem) -> dict[str, Any]:
        """The Batch API request line of one item (custom_id = item key)."""
        body: dict[str, Any] = {"model": self.model, "messages": build_messages(item),
                                "temperature": self.temperature}  # fmt: skip
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return {"custom_id": item.key, "method": "POST", "url": "/v1/chat/completions",
                "body": body}  # fmt: skip

    def write_requests(self, items: Sequence[JudgeItem], path: str | Path) -> Path:
        """Write one JSONL request line per item; keys must be unique."""
        check_unique_keys(items)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(self.request(item), ensure_ascii=False) + "\n")
        return path

    @staticmethod
    def _rows(path: Path) -> list[dict[str, Any]]:
        return read_jsonl(path, "; is this a Batch API output or error file?")

    def _judgement(self, row: dict[str, Any]) -> Judgement:
        """One output/error line → Judgement (error set unless status 200 with a body)."""
        response = row.get("response") or {}
        status, body = response.get("status_code"), response.get("body") or {}
        error = row.get("error") or (body.get("error") if isinstance(body, dict) else None)
        if error or status != 200:
            message = error.get("message", error) if isinstance(error, dict) else error
            error = _scrub(f"status {status}: {message}", self.api_key_env)
            return Judgement(score=None, attempts=1, error=error)
        try:
            text = _scrub(body["choices"][0]["message"]["content"] or "", self.api_key_env)
        except (KeyError, IndexError, TypeError):
            return Judgement(score=None, attempts=1, error="status 200 without choices")
        usage = _usage_of(body.get("usage"))
        self.meter.add(usage)
        score, reason = parse_score(text)
        return Judgement(score=score, reason=reason, raw=text, parse_failed=score is None,
                         attempts=1, usage=usage)  # fmt: skip

    def read_results(self, items: Sequence[JudgeItem], results_path: str | Path,
                     errors_path: str | Path | None = None) -> BatchResults:  # fmt: skip
        """Map every output line back to its item by custom_id; report the rest."""
        index = check_unique_keys(items)
        rows: dict[str, dict[str, Any]] = {}
        report = BatchReport(total=len(items))
        for path in [results_path] + ([errors_path] if errors_path else []):
            for row in self._rows(Path(path)):
                cid = row.get("custom_id")
                if cid not in index:
                    report.unknown.append(str(cid))
                elif cid in rows:
                    report.duplicates.append(cid)
                else:
                    rows[cid] = row
        judgements = []
        for item in items:
            row = rows.get(item.key)
            if row is None:
                report.missing.append(item.key)
                judgements.append(Judgement(score=None, error="missing from the batch output"))
                continue
            judgement = self._judgement(row)
            if judgement.error:
                report.failed.append(item.key)
            elif judgement.parse_failed:
                report.parse_failed.append(item.key)
            else:
                report.scored += 1
            judgements.append(judgement)
        if report.scored < report.total or report.unknown or report.duplicates:
            log.warning("batch judge %s: %s", self.name, report.counts)
        return BatchResults(judgements, report)

    def submit(self, items: Sequence[JudgeItem], workdir: str | Path) -> str:
        """Write, upload and start a batch; returns the batch id."""
        path = self.write_requests(items, Path(workdir) / "requests.jsonl")
        with path.open("rb") as f:
            uploaded = self.client.files.create(file=f, purpose="batch")
        batch = self.client.batches.create(input_file_id=uploaded.id, completion_window="24h",
                                           endpoint="/v1/chat/completions")  # fmt: skip
        log.info("batch judge %s: submitted %d items as %s", self.name, len(items), batch.id)
        return batch.id

    def poll(self, batch_id: str, workdir: str | Path) -> tuple[Path, Path | None]:
        """Wait for the batch to end; download its output (and error) file."""
        done = ("completed", "failed", "expired", "cancelled")
        while (batch := self.client.batches.retrieve(batch_id)).status not in done:
            log.info("batch %s: %s %s", batch_id, batch.status, batch.request_counts)
            time.sleep(self.poll_interval)
        if batch.status == "failed" and not batch.output_file_id:
            raise RuntimeError(f"batch {batch_id} failed: {batch.errors}")
        output = Path(workdir) / f"{batch_id}_output.jsonl"
        # No output file (expired with nothing done): an empty one, every id reported missing.
        fid = batch.output_file_id
        output.write_bytes(self.client.files.content(fid).read() if fid else b"")
        errors = None
        if batch.error_file_id:
            errors = Path(workdir) / f"{batch_id}_errors.jsonl"
            errors.write_bytes(self.client.files.content(batch.error_file_id).read())
        return output, errors

    def score(self, items: Sequence[JudgeItem], on_result: OnResult | None = None
              ) -> list[Judgement]:  # fmt: skip
        """Submit, wait (up to the 24 h window) and read back; blocks until the batch ends."""
        workdir = Path(self.workdir or tempfile.mkdtemp(prefix="judge_batch_"))
        workdir.mkdir(parents=True, exist_ok=True)
        results = self.read_results(items, *self.poll(self.submit(items, workdir), workdir))
        for i, judgement in enumerate(results):
            if on_result is not None:
                on_result(i, judgement)
        return results
