"""Judges that score (query, response) pairs with the ParaS2SBench guideline (paper §3.2).

* :class:`Judge` — the protocol: ``name`` and ``score(items, on_result=None)``.
* :class:`OpenAIJudge` — any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp):
  a thread pool, retries with exponential backoff + jitter on 408/409/429/5xx, timeouts and
  connection errors (``Retry-After`` honoured), a total deadline per request, re-asks when
  the answer has no valid score (a 200 that is no chat completion at all — invalid JSON,
  an HTML page — is asked again and then counted the same way), token usage and
  estimated cost in a :class:`UsageMeter`.
* :class:`~paras2s_pl.bench.batch.OpenAIBatchJudge` — the Batch API: ``write_requests``
  and ``read_results`` (the core, offline), plus ``submit``/``poll`` (``batch.py``).
* :class:`~paras2s_pl.bench.cache.CachedJudge` — wraps any judge with an SQLite cache keyed by
  ``(judge.name, sha256(messages))``; every finished call is committed at once, so a crash
  or Ctrl-C loses none and a rerun pays for nothing already scored.

A failed call is never dropped: it comes back as a :class:`Judgement` with ``score=None``
and either ``parse_failed=True`` (the answer, kept in ``raw``, had no 1..5 score after the
re-asks) or ``error`` set (the request itself failed after the retries); reports count both.

On an exception or Ctrl-C, :meth:`OpenAIJudge.score` starts no new request but waits for
those in flight (each ends by its deadline) and hands their answers to ``on_result``
before it re-raises, so a :class:`~paras2s_pl.bench.cache.CachedJudge` keeps every answer
that was paid for; a second Ctrl-C stops waiting.

The API key is read from the environment variable ``api_key_env`` when the client is made;
it is not stored on the judge, not in its repr, not logged and not cached, and is masked
wherever a server echoes it: answers, reasons, error messages and exceptions.

Example::

    judge = CachedJudge(OpenAIJudge(model="gpt-4.1"), "runs/judge_cache")
    judgements = judge.score([JudgeItem(...), ...])

Tests: ``pytest tests/test_judges.py`` (a local fake server, no network).
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import openai
from tqdm.auto import tqdm

from paras2s_pl.bench.parse import parse_score
from paras2s_pl.bench.prompt import JudgeItem, build_messages
from paras2s_pl.errors import UsageError
from paras2s_pl.http_deadline import request_deadline
from paras2s_pl.llm import make_openai_client

log = logging.getLogger(__name__)

#: USD per 1M (input, output) tokens, OpenAI list prices (2025; check before quoting a
#: bill). A dated id ("gpt-4.1-2025-04-14") uses its longest listed prefix; an unlisted
#: model has cost None. Pass ``prices=`` to override.
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
}
BATCH_DISCOUNT = 0.5  # the Batch API bills half the synchronous price
REASK = (
    "Your answer did not follow the required format. Reply only in the format: "
    "The reason is _; The score is _ . The score must be one whole number from 1 to 5."
)
#: Errors that no retry fixes (wrong key, model or URL): they stop the run.
FATAL_ERRORS = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
RAW_LIMIT = 2000  # characters of an unusable reply's body kept in ``raw`` (an HTML page…)


@dataclass(frozen=True)
class Usage:
    """Tokens billed for one judgement (all its attempts)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Judgement:
    """A judge's verdict on one item; ``score`` is None on a parse failure or an error."""

    score: int | None
    reason: str = ""
    raw: str = ""  # the (last) answer as received
    parse_failed: bool = False  # an answer came, but without a 1..5 score, after re-asks
    attempts: int = 0  # HTTP requests made (retries and re-asks included)
    usage: Usage = field(default_factory=Usage)
    cached: bool = False  # served from a CachedJudge's disk cache
    error: str | None = None  # the request failed (after retries); not cached


#: Called as ``on_result(index_in_items, judgement)`` as soon as one item is finished,
#: possibly from a worker thread.
OnResult = Callable[[int, Judgement], None]


@runtime_checkable
class Judge(Protocol):
    """Scores items; ``name`` identifies the judge in cache keys and reports.

    ``score`` returns one :class:`Judgement` per item, in order, and calls ``on_result``
    for each item as soon as it is finished (that is how :class:`CachedJudge` commits
    each call before the next; a judge that finishes all at once calls it at the end).
    """

    name: str

    def score(self, items: Sequence[JudgeItem], on_result: OnResult | None = None
              ) -> list[Judgement]:  # fmt: skip
        """One judgement per item, in order; ``on_result(i, j)`` as each finishes."""
        ...


def price_for(model: str, prices: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    """The (input, output) USD per 1M tokens of ``model``: exact, else longest prefix."""
    if model in prices:
        return prices[model]
    prefixes = [p for p in prices if model.startswith(p + "-")]
    return prices[max(prefixes, key=len)] if prefixes else None


class UsageMeter:
    """Thread-safe running totals of requests, tokens and estimated cost of one judge."""

    def __init__(self, model: str, prices: Mapping[str, tuple[float, float]] | None = None,
                 discount: float = 1.0) -> None:  # fmt: skip
        self.model, self.discount = model, discount
        self.price = price_for(model, PRICES_PER_MTOK if prices is None else prices)
        self.requests = self.prompt_tokens = self.completion_tokens = 0
        self._lock = threading.Lock()

    def add(self, usage: Usage, requests: int = 1) -> None:
        """Count ``requests`` billed calls and their tokens."""
        with self._lock:
            self.requests += requests
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens

    @property
    def cost_usd(self) -> float | None:
        """Estimated USD so far; None when the model has no price."""
        if self.price is None:
            return None
        inp, out = self.price
        return self.discount * (self.prompt_tokens * inp + self.completion_tokens * out) / 1e6

    def summary(self) -> dict[str, Any]:
        """Totals as a dict, for logs and reports."""
        return {"model": self.model, "requests": self.requests,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": self.cost_usd}  # fmt: skip

    def __repr__(self) -> str:
        return f"UsageMeter({self.summary()})"


def _usage_of(raw_usage: Any) -> Usage:
    """Usage from a completion's ``usage`` (object or dict); zeros when absent."""
    if raw_usage is None:
        return Usage()
    get = raw_usage.get if isinstance(raw_usage, dict) else lambda k: getattr(raw_usage, k, 0)
    return Usage(int(get("prompt_tokens") or 0), int(get("completion_tokens") or 0))


def _retryable(err: BaseException) -> bool:
    """Timeouts, connection errors, 408/409/429 and 5xx are worth another try."""
    if isinstance(err, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code in (408, 409, 429) or err.status_code >= 500
    return False


def _retry_after(err: BaseException | None) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms`` or ``Retry-After``), if any."""
    if not isinstance(err, openai.APIStatusError):
        return None
    headers = err.response.headers
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            parsed = email.utils.parsedate_tz(value)  # HTTP-date form
            if parsed is not None:
                return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    return None


def _make_client(base_url: str | None, api_key_env: str, timeout: float) -> openai.OpenAI:
    """The shared client: its own retries off (ours are counted and logged).

    It honours a total deadline per request (:mod:`paras2s_pl.http_deadline`).
    """
    return make_openai_client(base_url, api_key_env, timeout, max_retries=0, deadline=True)


def _scrub(text: str, api_key_env: str) -> str:
    """``text`` with the API key (if it somehow appears, e.g. echoed by a server) masked."""
    key = os.environ.get(api_key_env)
    return text.replace(key, "***") if key and len(key) >= 8 else text


class _Interrupted(Exception):
    """The run is stopping: the next request of an item is not sent."""


def _read_reply(response: Any) -> tuple[str | None, Usage, str]:
    """``(answer text, usage, body)`` of a raw 200 response; text None when it is unusable.

    Unusable: a body that is not JSON, an HTML page (the client hands back a plain ``str``),
    JSON that is no chat completion. A completion without content counts as an empty
    answer (re-asked like any answer without a score).
    """
    body = response.http_response.text
    try:
        completion = response.parse()
        choices = completion.choices
        content = choices[0].message.content if choices else ""
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return None, Usage(), body  # ValueError covers JSONDecodeError and pydantic's errors
    if content is not None and not isinstance(content, str):
        return None, Usage(), body
    return content or "", _usage_of(getattr(completion, "usage", None)), body


class OpenAIJudge:
    """GPT-4.1 (or any OpenAI-compatible chat model) applying the guideline, temperature 0.

    Args:
        model: model id sent to the endpoint (also the default ``name``).
        base_url: endpoint, e.g. ``http://localhost:8000/v1`` for vLLM; None: OpenAI.
        api_key_env: environment variable holding the key (a local server may have none).
        temperature: sampling temperature.
        max_tokens: answer budget (the answer is one short sentence); None: server default.
        max_concurrency: requests in flight (thread pool size).
        timeout: seconds per HTTP request in total (connect, send, wait, read), not per read.
        max_retries: extra tries of one request on 408/409/429/5xx, timeout, connection error.
        parse_retries: re-asks when an answer has no valid 1..5 score.
        backoff_base: first backoff in seconds; doubles per retry, "equal jitter" (half
            fixed, half random), capped at ``backoff_max``. A ``Retry-After`` header wins
            (capped at ``max_retry_after``).
        backoff_max: longest backoff without ``Retry-After``.
        max_retry_after: longest ``Retry-After`` honoured.
        prices: USD per 1M (input, output) tokens by model; None: :data:`PRICES_PER_MTOK`.
        name: the judge's name in cache keys and reports; None: ``model``. Change it when
            a setting that changes answers (temperature, endpoint) changes.
        progress: show a tqdm bar over items.
    """

    def __init__(self, model: str = "gpt-4.1", base_url: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", temperature: float = 0.0,
                 max_tokens: int | None = 256, max_concurrency: int = 8, timeout: float = 60.0,
                 max_retries: int = 5, parse_retries: int = 2, backoff_base: float = 0.5,
                 backoff_max: float = 30.0, max_retry_after: float = 120.0,
                 prices: dict[str, tuple[float, float]] | None = None, name: str | None = None,
                 progress: bool = True) -> None:  # fmt: skip
        if max_concurrency < 1 or max_retries < 0 or parse_retries < 0:
            raise UsageError("judge options: max_concurrency must be >= 1, max_retries and "
                             "parse_retries >= 0")  # fmt: skip
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.temperature, self.max_tokens = temperature, max_tokens
        self.max_concurrency, self.timeout = max_concurrency, timeout
        self.max_retries, self.parse_retries = max_retries, parse_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.max_retry_after = max_retry_after
        self.name = name or model
        self.progress = progress
        self.meter = UsageMeter(model, prices)
        self._client: openai.OpenAI | None = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"OpenAIJudge(name={self.name!r}, model={self.model!r}, "
                f"base_url={self.base_url!r}, api_key_env={self.api_key_env!r}, "
                f"temperature={self.temperature}, "
                f"max_concurrency={self.max_concurrency})")  # fmt: skip

    @property
    def client(self) -> openai.OpenAI:
        """The ``openai.OpenAI`` client, made on first use (reads the key then)."""
        with self._client_lock:
            if self._client is None:
                self._client = _make_client(self.base_url, self.api_key_env, self.timeout)
            return self._client

    # ---- one request with retries --------------------------------------------------------
    def _delay(self, err: BaseException, retry: int) -> float:
        """Seconds before retry ``retry`` (1, 2, …): ``Retry-After``, else backoff + jitter."""
        delay = _retry_after(err)
        if delay is not None:
            return min(delay, self.max_retry_after)
        step = min(self.backoff_base * 2 ** (retry - 1), self.backoff_max)
        return step / 2 + random.uniform(0, step / 2)

    def _create(self, key: str, messages: list[dict[str, str]], tries: list[int],
                stop: threading.Event) -> Any:  # fmt: skip
        """One chat completion (the raw response), retried; ``tries[0]`` counts requests.

        The retry loop is ours, not the client's (its ``max_retries`` is 0), so every try is
        counted and logged, the backoff base is configurable and a stopping run sends no
        further try (:class:`_Interrupted`). Each try ends within ``timeout`` seconds in
        total, not per read (:func:`~paras2s_pl.http_deadline.request_deadline`).
        """
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages,
                                  "temperature": self.temperature}  # fmt: skip
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        for retry in range(self.max_retries + 1):
            if stop.is_set():
                raise _Interrupted
            tries[0] += 1
            try:
                with request_deadline(self.timeout):
                    return self.client.chat.completions.with_raw_response.create(**kwargs)
            except openai.OpenAIError as err:
                if retry == self.max_retries or not _retryable(err):
                    raise
                delay = self._delay(err, retry + 1)
                log.warning("judge %s: item %s: %s (try %d of %d); retrying in %.2f s",
                            self.name, key, type(err).__name__, retry + 1,
                            self.max_retries + 1, delay)  # fmt: skip
                if stop.wait(delay):  # woken by a stopping run: send no retry
                    raise _Interrupted from None
        raise AssertionError("unreachable")

    # ---- one item, with re-asks ----------------------------------------------------------
    def score_one(self, item: JudgeItem, stop: threading.Event | None = None) -> Judgement:
        """Judge one item: its prompt is built here, fresh; never reused from another item.

        An answer without a 1..5 score is re-asked; an unusable reply (not a chat
        completion) is asked again as it was; after ``parse_retries`` more answers either
        kind is a parse failure. Once ``stop`` is set no further request is sent and the
        item comes back with ``error`` set (not cached: a rerun asks again).
        """
        stop = stop or threading.Event()
        base = build_messages(item)
        messages, tries, usage, text = base, [0], Usage(), ""
        for ask in range(self.parse_retries + 1):
            fatal = None
            try:
                response = self._create(item.key, messages, tries, stop)
            except _Interrupted:
                return Judgement(score=None, raw=text, attempts=tries[0], usage=usage,
                                 error="interrupted: the run stopped first")  # fmt: skip
            except FATAL_ERRORS as err:
                fatal = _scrub(f"{type(err).__name__}: {err}", self.api_key_env)
            except openai.OpenAIError as err:
                error = _scrub(f"{type(err).__name__}: {err}", self.api_key_env)
                log.warning("judge %s: item %s failed: %s", self.name, item.key, error)
                return Judgement(score=None, raw=text, attempts=tries[0], usage=usage,
                                 error=error)  # fmt: skip
            if fatal is not None:
                # Raised outside ``except`` so that the original error, whose message may
                # echo the key, is neither its cause nor its context in a traceback.
                raise RuntimeError(
                    f"judge {self.name}: {fatal} from {self.base_url or 'OpenAI'}; "
                    f"check the model id, base_url and the key in ${self.api_key_env}"
                )
            answer, got, body = _read_reply(response)
            usage += got
            self.meter.add(got)
            if answer is None:  # ask again as it was: the garbage is no answer to re-ask about
                text = _scrub(body[:RAW_LIMIT], self.api_key_env)
                log.info("judge %s: item %s: unusable reply %d (%s): %.80r", self.name,
                         item.key, ask + 1, response.headers.get("content-type"), text)  # fmt: skip
                continue
            text = _scrub(answer, self.api_key_env)
            score, reason = parse_score(text)
            if score is not None:
                return Judgement(score=score, reason=reason, raw=text, attempts=tries[0],
                                 usage=usage)  # fmt: skip
            log.info("judge %s: item %s: no 1..5 score in answer %d", self.name, item.key, ask + 1)
            messages = [*base, {"role": "assistant", "content": text},
                        {"role": "user", "content": REASK}]  # fmt: skip
        log.warning("judge %s: item %s: parse failure after %d answers; raw: %.200r",
                    self.name, item.key, self.parse_retries + 1, text)  # fmt: skip
        return Judgement(score=None, raw=text, parse_failed=True, attempts=tries[0], usage=usage)

    # ---- many items ----------------------------------------------------------------------
    def score(self, items: Sequence[JudgeItem], on_result: OnResult | None = None
              ) -> list[Judgement]:  # fmt: skip
        """Judge ``items`` concurrently; results in input order, each reported when done.

        On an exception (a fatal API error, Ctrl-C, an ``on_result`` error) no new request
        starts, the requests in flight finish (each within its deadline) and reach
        ``on_result``, then the exception propagates: a cache closed by the caller afterwards
        has all of them. A second Ctrl-C while waiting propagates at once.
        """
        items = list(items)
        if not items:
            return []
        self.client  # noqa: B018 - fail on a missing key before starting threads
        results: list[Judgement | None] = [None] * len(items)
        stop = threading.Event()  # set on the first exception: start no new paid request

        def work(i: int) -> Judgement | None:
            if stop.is_set():
                return None
            try:
                judgement = self.score_one(items[i], stop)
                if on_result is not None:
                    on_result(i, judgement)
            except BaseException:
                stop.set()
                raise
            return judgement

        pool = ThreadPoolExecutor(min(self.max_concurrency, len(items)), "judge")
        bar = tqdm(total=len(items), desc=f"judge {self.name}", unit="item",
                   disable=not self.progress)  # fmt: skip
        futures: dict[Future[Judgement | None], int] = {}
        try:
            for i in range(len(items)):
                futures[pool.submit(work, i)] = i
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
        except BaseException as err:
            stop.set()
            self._finish_in_flight(pool, futures, err)
            raise
        finally:
            bar.close()
        pool.shutdown()
        log.info("judge %s: %s", self.name, self.meter.summary())
        return results  # type: ignore[return-value]

    def _finish_in_flight(self, pool: ThreadPoolExecutor, futures: dict[Future[Any], int],
                          err: BaseException) -> None:  # fmt: skip
        """Cancel queued items and wait for the running ones (their answers are paid)."""
        running = sum(f.running() for f in futures)
        if running:
            log.warning("judge %s: stopping on %s; waiting up to %.0f s for %d requests in "
                        "flight so their answers are kept (Ctrl-C again to abandon them)",
                        self.name, type(err).__name__, self.timeout, running)  # fmt: skip
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        except KeyboardInterrupt:
            log.warning("judge %s: abandoned %d requests in flight; their answers are lost",
                        self.name, sum(f.running() for f in futures))  # fmt: skip
            raise
