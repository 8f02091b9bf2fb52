"""A total deadline per HTTP request for the ``openai`` client (httpx underneath).

httpx's ``timeout`` bounds each socket operation — connect, *one* read, one write — not a
whole request: a server that drips one byte per second never trips a 3 s read timeout and
held one judge request for 41 s. httpx has no total timeout, so this module adds one where
the waiting happens, at the socket:

* :func:`request_deadline` sets a deadline for the HTTP requests the *calling thread*
  makes (the sync client does all of a request's I/O in the caller's thread);
* :func:`deadline_transport` is an ``HTTPTransport`` whose network backend caps every
  connect, read and write at the time left; past the deadline it raises the timeout error
  a slow read would (``openai.APITimeoutError`` to the caller), and httpcore closes that
  connection.

Why at the socket rather than running the call in a helper thread and abandoning it at the
deadline: an abandoned call keeps its thread and connection until the server stops (a
drip may never stop), and its answer arrives — and is billed — after it was given up.
Here the request really ends at its deadline and nothing is left running. The price is one
hook into httpx's transport: its connection pool is built without a ``network_backend``
argument, so :func:`deadline_transport` wraps the pool's backend after construction (it
raises if that attribute moves, so a library upgrade cannot silently drop the deadline).
Requests sent through an environment proxy (``HTTPS_PROXY``) use httpx's own proxy
transports and keep per-read timeouts only.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

_local = threading.local()


def http_modules() -> tuple[ModuleType, ModuleType]:
    """``(httpx, httpcore)`` as used by the installed ``openai`` (``httpx2`` in openai ≥ 3)."""
    import openai

    roots = [c.__module__.split(".")[0] for c in openai.DefaultHttpxClient.__mro__]
    httpx = importlib.import_module(next(r for r in roots if r.startswith("httpx")))
    core = "httpcore2" if httpx.__name__ == "httpx2" else "httpcore"
    return httpx, importlib.import_module(core)


@contextmanager
def request_deadline(seconds: float | None) -> Iterator[None]:
    """HTTP requests of this thread inside the block end within ``seconds`` (None: no cap)."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = None if seconds is None else time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = previous


def _cap(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` shortened to the time left before this thread's deadline."""
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("request deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream:
    """A httpcore network stream whose every operation stops at the thread's deadline."""

    def __init__(self, stream: Any, core: ModuleType) -> None:
        self._stream, self._core = stream, core

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _cap(timeout, self._core.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _cap(timeout, self._core.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> _DeadlineStream:  # fmt: skip
        capped = _cap(timeout, self._core.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, capped),
                               self._core)  # fmt: skip

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend:
    """A httpcore network backend handing out :class:`_DeadlineStream` connections."""

    def __init__(self, backend: Any, core: ModuleType) -> None:
        self._backend, self._core = backend, core

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None
                    ) -> _DeadlineStream:  # fmt: skip
        capped = _cap(timeout, self._core.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, capped, local_address, socket_options)
        return _DeadlineStream(stream, self._core)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> _DeadlineStream:  # fmt: skip
        capped = _cap(timeout, self._core.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, capped, socket_options),
                               self._core)  # fmt: skip

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def deadline_transport(**kwargs: Any) -> Any:
    """An ``HTTPTransport(**kwargs)`` that honours :func:`request_deadline`."""
    httpx, core = http_modules()
    transport = httpx.HTTPTransport(**kwargs)
    pool = transport._pool  # httpx builds the pool itself, without a network_backend argument
    if not hasattr(pool, "_network_backend"):
        raise RuntimeError(
            f"{httpx.__name__} {httpx.__version__}: its connection pool has no network "
            "backend to wrap; paras2s_pl/http_deadline.py needs updating"
        )
    pool._network_backend = _DeadlineBackend(pool._network_backend, core)
    return transport
