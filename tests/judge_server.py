"""A scriptable fake OpenAI chat endpoint for the judge tests (stdlib only, 127.0.0.1).

``POST /v1/chat/completions`` answers "The reason is …; The score is N." for the prompt in
the FIRST user message (the guideline prompt; a re-ask repeats it, so it counts under the
same prompt). Faults are scripted per prompt substring with :meth:`JudgeServer.script`:
the actions are used one per request, in order, then the default answer resumes::

    server.script("lost my job", RateLimited(retry_after=1), ServerError(), Score(7))

The server counts, per sha256 of that prompt, requests that ``arrived`` and requests
``answered`` (a valid judge answer written in full; a :class:`Slow` answer is never
counted, its client has given up, nor is a :class:`Malformed` body or a cut
:class:`Drip`). :meth:`JudgeServer.hold_after` makes it answer the first n requests and
hold every later one unanswered until :meth:`JudgeServer.stop` — the crash test kills its
client while those are held; :meth:`JudgeServer.delay_after` answers later ones late
instead — the interrupt tests stop their client while those answers are on their way.
Holds, delays, drips and slow answers wait on the stop event, bounded by ``MAX_WAIT``, so
the server always stops.

Use: ``with JudgeServer() as server: OpenAIJudge(base_url=server.url, ...)``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_WAIT = 20.0  # no handler ever blocks longer than this


@dataclass(frozen=True)
class Score:
    """Answer in the judge format with this score (any integer, e.g. an invalid 7)."""

    value: int


@dataclass(frozen=True)
class NoScore:
    """A 200 answer with no score in it."""

    text: str = "I think this response is quite nice overall."


@dataclass(frozen=True)
class RateLimited:
    """429 with a ``Retry-After`` header (seconds)."""

    retry_after: float = 1


@dataclass(frozen=True)
class ServerError:
    """A 5xx status."""

    status: int = 500


@dataclass(frozen=True)
class Slow:
    """Wait this long before answering (past the client's timeout); not counted answered."""

    seconds: float = 2.0


@dataclass(frozen=True)
class Delayed:
    """Answer normally (counted) after this many seconds."""

    seconds: float = 1.0


@dataclass(frozen=True)
class Malformed:
    """A 200 whose body is no chat completion: invalid JSON by default, or e.g. an HTML page."""

    body: str = '{"id": "chatcmpl-cut", "choices": [{"message": '
    content_type: str = "application/json"


HTML = Malformed("<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")


@dataclass(frozen=True)
class Drip:
    """Send a valid answer one byte every ``interval`` seconds (status line and headers
    too), giving up after ``limit`` seconds: every read is quick, the request never ends."""

    interval: float = 1.0
    limit: float = 10.0


@dataclass(frozen=True)
class EchoKey:
    """Echo the request's bearer token: in a scored answer (``score``), an answer without a
    score (``score=None``), or, with a ``status`` other than 200, in the error message."""

    status: int = 200
    score: int | None = 3


def sha256(text: str) -> str:
    """Hex sha256 of a prompt, the key of the server's counters."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_score(prompt: str) -> int:
    """A deterministic 1..5 score per prompt, so mix-ups between items show."""
    return 1 + int(sha256(prompt)[:8], 16) % 5


class JudgeServer:
    """The fake endpoint; ``url`` is the ``base_url`` to give the openai client."""

    def __init__(self) -> None:
        self.arrived: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.auth_headers: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self._scripts: list[tuple[str, list[Any]]] = []
        self._hold_after: int | None = None
        self._delay_after: tuple[int, float] | None = None
        self._gate_after: int | None = None
        self._released = threading.Event()
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def script(self, match: str, *actions: Any) -> None:
        """Use ``actions`` in order for requests whose prompt contains ``match``."""
        with self._lock:
            self._scripts.append((match, list(actions)))

    def hold_after(self, n: int | None) -> None:
        """Answer the first ``n`` requests in total, hold later ones until stop; None: off."""
        self._hold_after = n

    def delay_after(self, n: int | None, seconds: float = 1.0) -> None:
        """Answer the first ``n`` requests at once and later ones ``seconds`` late; None: off."""
        self._delay_after = None if n is None else (n, seconds)

    def gate_after(self, n: int | None) -> None:
        """Answer the first ``n`` requests at once and later ones only after :meth:`release`
        (bounded by ``MAX_WAIT``); None: off. Unlike a delay, no timing: a test releases
        them once its client has reacted (e.g. taken a Ctrl-C)."""
        self._released.clear()
        self._gate_after = n

    def release(self) -> None:
        """Answer the requests :meth:`gate_after` is holding back (and later ones at once)."""
        self._released.set()

    def total(self, counter: Counter[str]) -> int:
        """Sum of a counter (``arrived`` or ``answered``), read under the lock."""
        with self._lock:
            return sum(counter.values())

    def wait_for_arrivals(self, n: int, timeout: float = 10.0) -> bool:
        """Block until ``n`` requests have arrived; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: sum(self.arrived.values()) >= n, timeout)

    def start(self) -> JudgeServer:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release holds and slow answers, stop serving, close the socket (bounded)."""
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- request handling ----------------------------------------------------------------
    def _arrive(self, prompt: str, body: dict[str, Any], auth: str) -> tuple[Any, bool, float]:
        """Record a request; return (its scripted action or None, whether to hold it, how
        long to delay its answer)."""
        with self._lock:
            self.arrived[sha256(prompt)] += 1
            self.bodies.append(body)
            self.auth_headers.append(auth)
            n = sum(self.arrived.values())
            hold = self._hold_after is not None and n > self._hold_after
            delay = self._delay_after[1] if self._delay_after and n > self._delay_after[0] else 0
            if self._gate_after is not None and n > self._gate_after:
                delay = -1.0  # wait for release()
            self._lock.notify_all()
            for match, actions in self._scripts:
                if match in prompt and actions:
                    return actions.pop(0), hold, delay
        return None, hold, delay

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict[str, Any] | str,
                      headers: dict[str, str] | None = None,
                      content_type: str = "application/json") -> bool:  # fmt: skip
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                    return True
                except OSError:  # the client gave up (timeout) or was killed
                    return False

            def _drip(self, drip: Drip, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(data)}\r\n\r\n").encode()  # fmt: skip
                end = time.monotonic() + min(drip.limit, MAX_WAIT)
                self.close_connection = True  # never reuse a half-sent connection
                try:
                    for i in range(len(head + data)):
                        if time.monotonic() > end or server._stop.wait(drip.interval):
                            return
                        self.wfile.write((head + data)[i : i + 1])
                        self.wfile.flush()
                except OSError:  # the client gave up
                    return

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
                auth = self.headers.get("Authorization", "")
                action, hold, delay = server._arrive(prompt, body, auth)
                if hold:
                    server._stop.wait(MAX_WAIT)
                    return  # never answered: the connection just closes
                if isinstance(action, Delayed):
                    delay = max(delay, action.seconds)
                if delay < 0:  # gated: until release() or stop, bounded
                    end = time.monotonic() + MAX_WAIT
                    while not server._released.wait(0.05):
                        if server._stop.is_set() or time.monotonic() > end:
                            break
                elif delay:
                    server._stop.wait(min(delay, MAX_WAIT))
                if isinstance(action, Malformed):
                    self._send(200, action.body, content_type=action.content_type)
                    return
                token = auth.removeprefix("Bearer ")
                if isinstance(action, EchoKey) and action.status != 200:
                    message = f"Incorrect API key provided: {token}"
                    self._send(action.status, {"error": {"message": message, "type": "auth"}})
                    return
                if isinstance(action, RateLimited):
                    self._send(429, {"error": {"message": "rate limited", "type": "requests"}},
                               {"Retry-After": f"{action.retry_after:g}"})  # fmt: skip
                    return
                if isinstance(action, ServerError):
                    self._send(action.status, {"error": {"message": "boom", "type": "server"}})
                    return
                if isinstance(action, Slow):
                    server._stop.wait(min(action.seconds, MAX_WAIT))
                if isinstance(action, NoScore):
                    text = action.text
                elif isinstance(action, EchoKey):
                    text = f"The reason is your key {token} is fine"
                    text += "" if action.score is None else f"; The score is {action.score}."
                else:
                    value = action.value if isinstance(action, Score) else default_score(prompt)
                    text = f"The reason is fake judge; The score is {value}."
                completion = {
                    "id": "chatcmpl-fake", "object": "chat.completion",
                    "created": int(time.time()), "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": len(prompt) // 4,
                              "completion_tokens": len(text) // 4,
                              "total_tokens": len(prompt) // 4 + len(text) // 4},
                }  # fmt: skip
                if isinstance(action, Drip):
                    self._drip(action, completion)
                    return
                if self._send(200, completion) and not isinstance(action, Slow):
                    with server._lock:
                        server.answered[sha256(prompt)] += 1

        return Handler
