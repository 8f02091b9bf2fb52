"""The OpenAI-compatible client layer shared by judges, captioners, responders and TTS.

One place reads the API key (from the environment only, never stored or logged) and
builds the official ``openai`` client for OpenAI or any compatible server (vLLM,
llama.cpp…) given by ``base_url``.
"""

from __future__ import annotations

import os
from typing import Any

from paras2s_pl.errors import UsageError


def make_openai_client(
    base_url: str | None,
    api_key_env: str = "OPENAI_API_KEY",
    timeout: float = 60.0,
    max_retries: int = 0,
    deadline: bool = False,
) -> Any:
    """An ``openai.OpenAI`` client; a local ``base_url`` may run without a key.

    ``max_retries`` is the client's own retry count (exponential backoff on 408/409/429/5xx
    and connection errors); callers that count their retries themselves pass 0.
    ``timeout`` bounds each socket read; with ``deadline`` the client also honours
    :func:`paras2s_pl.http_deadline.request_deadline`, a total time per request.
    """
    import openai

    key = os.environ.get(api_key_env)
    if not key and base_url is None:
        raise UsageError(f"set the environment variable {api_key_env} to an API key, "
                         "or pass base_url for a local OpenAI-compatible server")  # fmt: skip
    http_client = None
    if deadline:
        from paras2s_pl.http_deadline import deadline_transport

        transport = deadline_transport(limits=openai.DEFAULT_CONNECTION_LIMITS)
        http_client = openai.DefaultHttpxClient(transport=transport)
    return openai.OpenAI(api_key=key or "EMPTY", base_url=base_url, timeout=timeout,
                         max_retries=max_retries, http_client=http_client)  # fmt: skip
