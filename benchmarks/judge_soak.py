"""Judge soak: many calls through the real ``openai`` client, scripted faults, one Ctrl-C.

Runs the loopback fake endpoint of ``tests/judge_server.py``, scripts a fault for a share
of the prompts (429 with ``Retry-After``, 500, a malformed 200 — invalid JSON or an HTML
page — and a slow drip of one byte per ``--drip`` seconds that only the total deadline
per request ends), judges every prompt through a :class:`CachedJudge`, sends itself
SIGINT once ``--interrupt-after`` requests have arrived, then resumes with a fresh judge
on the same cache::

    python benchmarks/judge_soak.py --calls 500 --concurrency 16 --fault-rate 0.3

Prints requests sent, answers kept, answers bought twice (a prompt the server answered
in full more than once; the target is 0) and throughput.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from judge_server import HTML, Drip, JudgeServer, Malformed, RateLimited, ServerError  # noqa: E402

from paras2s_pl.bench.cache import CachedJudge  # noqa: E402
from paras2s_pl.bench.judges import Judgement, OpenAIJudge  # noqa: E402
from paras2s_pl.bench.prompt import JudgeItem, prompt_sha256  # noqa: E402
from paras2s_pl.data import labels  # noqa: E402


def make_items(n: int) -> list[JudgeItem]:
    """``n`` items with distinct prompts over all categories."""
    items = []
    for i in range(n):
        category = labels.CATEGORIES[i % len(labels.CATEGORIES)]
        styles = labels.STYLES[category]
        items.append(JudgeItem(key=f"soak{i:05d}", category=category, style=styles[i % len(styles)],
                               content=f"soak query {i}: I finally finished my thesis.",
                               response_text=f"soak reply {i}: congratulations!",
                               response_tone="cheerful (female voice)"))  # fmt: skip
    return items


def script_faults(server: JudgeServer, items: list[JudgeItem], rate: float, drip: float,
                  seed: int) -> dict[str, int]:  # fmt: skip
    """One fault for a ``rate`` share of the items, kinds in turn; counts per kind."""
    rng = random.Random(seed)
    kinds = {
        "429": lambda: RateLimited(retry_after=0.05),
        "500": lambda: ServerError(500),
        "bad json": lambda: Malformed(),
        "html": lambda: HTML,
        "drip": lambda: Drip(interval=drip, limit=30.0),
    }
    names = list(kinds)
    counts = dict.fromkeys(names, 0)
    for j, item in enumerate(rng.sample(items, round(rate * len(items)))):
        name = names[j % len(names)]
        server.script(item.content, kinds[name]())  # "query 1: …" is not in "query 10: …"
        counts[name] += 1
    return counts


def judge_for(server: JudgeServer, args: argparse.Namespace) -> OpenAIJudge:
    return OpenAIJudge(base_url=server.url, max_concurrency=args.concurrency,
                       timeout=args.timeout, max_retries=3, parse_retries=2,
                       backoff_base=0.02, backoff_max=0.2, progress=False)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=500, help="prompts to judge")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--fault-rate", type=float, default=0.3, help="share of prompts with a fault")
    ap.add_argument("--latency", type=float, default=0.2, help="server seconds per answer")
    ap.add_argument("--timeout", type=float, default=1.0, help="judge deadline per request")
    ap.add_argument("--drip", type=float, default=0.05, help="seconds per byte of a drip")
    ap.add_argument("--interrupt-after", type=int, default=None,
                    help="SIGINT once this many requests arrived (default calls/3)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="show the judge's retry warnings")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.ERROR)
    os.environ.setdefault("OPENAI_API_KEY", "sk-soak-not-a-real-key-0123456789")
    items = make_items(args.calls)
    interrupt_after = args.interrupt_after or args.calls // 3

    with JudgeServer() as server, tempfile.TemporaryDirectory() as cache:
        faults = script_faults(server, items, args.fault_rate, args.drip, args.seed)
        server.delay_after(0, args.latency)  # a real judge takes a while: answers in flight

        at_sigint: list[int] = []

        def interrupt() -> None:
            if server.wait_for_arrivals(interrupt_after, timeout=600):
                at_sigint.append(server.total(server.answered))
                os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
        t0 = time.perf_counter()
        first: list[Judgement] = []
        with CachedJudge(judge_for(server, args), cache) as judge:
            try:
                first = judge.score(items)
            except KeyboardInterrupt:
                pass
        t1 = time.perf_counter()
        requests_1, answered_1 = server.total(server.arrived), server.total(server.answered)
        with CachedJudge(judge_for(server, args), cache) as judge:
            kept_1 = sum(judge.get(prompt_sha256(it)) is not None for it in items)
            second = judge.score(items)
        t2 = time.perf_counter()

    requests = server.total(server.arrived)
    twice = sum(n - 1 for n in server.answered.values() if n > 1)
    scored = sum(j.score is not None for j in second)
    failed = sum(j.parse_failed for j in second)
    errors = sum(j.error is not None for j in second)
    faulty = ", ".join(f"{k} {v}" for k, v in faults.items())
    print(f"{args.calls} calls, concurrency {args.concurrency}, faults on "
          f"{sum(faults.values())} prompts ({faulty}), latency {args.latency:g} s, "
          f"deadline {args.timeout:g} s, SIGINT after {interrupt_after} requests"
          + ("" if not first else " (run finished before the SIGINT)"))  # fmt: skip
    rows = [
        ("requests sent (run 1, interrupted)", f"{requests_1}"),
        ("answers written by the server at SIGINT", f"{at_sigint[0] if at_sigint else '-'}"),
        ("answers written by the server (run 1)", f"{answered_1}"),
        ("answers kept in the cache after run 1", f"{kept_1}"),
        ("requests sent (run 2, resumed)", f"{requests - requests_1}"),
        ("requests sent (total)", f"{requests}"),
        ("answers kept (scored + parse failures)", f"{scored + failed}"),
        ("  scored / parse failures / errors", f"{scored} / {failed} / {errors}"),
        ("answers bought twice (target 0)", f"{twice}"),
        ("wall seconds (run 1 + run 2)", f"{t1 - t0:.1f} + {t2 - t1:.1f}"),
        ("throughput (calls/s)", f"{args.calls / (t2 - t0):.1f}"),
        ("throughput (requests/s)", f"{requests / (t2 - t0):.1f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"| {'metric':<{width}} | {'value':>13} |")
    print(f"|{'-' * (width + 2)}|{'-' * 15}|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value:>13} |")
    if twice:
        sys.exit(1)


if __name__ == "__main__":
    main()
