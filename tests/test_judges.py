"""The judge layer: guideline prompt, score parsing, OpenAI judge over real HTTP, cache, batch.

Every OpenAI call goes through the real ``openai`` client to ``judge_server.JudgeServer``
on 127.0.0.1 (no network). Backoff is shrunk to milliseconds; the one deliberate wait is
the server's ``Retry-After: 1``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from dataclasses import asdict
from types import SimpleNamespace

import pytest
from judge_server import (
    HTML,
    Delayed,
    Drip,
    EchoKey,
    JudgeServer,
    Malformed,
    NoScore,
    RateLimited,
    Score,
    ServerError,
    Slow,
    sha256,
)
from judge_server import default_score as server_score

from paras2s_pl.bench.batch import OpenAIBatchJudge, check_unique_keys
from paras2s_pl.bench.cache import CachedJudge
from paras2s_pl.bench.judges import REASK, Judge, OpenAIJudge, Usage, UsageMeter
from paras2s_pl.bench.parse import parse_score
from paras2s_pl.bench.prompt import (
    JudgeItem,
    build_messages,
    build_prompt,
    load_guideline,
    prompt_sha256,
)
from paras2s_pl.data import labels

KEY = "sk-test-SECRET-KEY-0123456789abcdef"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


@pytest.fixture
def server():
    with JudgeServer() as s:
        yield s


def make_item(i: int, category: str = "emotion", style: str | None = None, **kw) -> JudgeItem:
    fields = dict(
        key=f"q{i:03d}",
        category=category,
        style=style or labels.STYLES[category][i % len(labels.STYLES[category])],
        content=f"query number {i}: I lost my job today.",
        response_text=f"response {i}: I'm sorry to hear that.",
        response_tone="empathetic (female voice; low, slow, soft)",
    )
    return JudgeItem(**{**fields, **kw})


def make_judge(server: JudgeServer, **kw) -> OpenAIJudge:
    cfg = dict(base_url=server.url, timeout=2.0, max_retries=3, parse_retries=2,
               backoff_base=0.01, backoff_max=0.05, max_concurrency=4, progress=False)  # fmt: skip
    return OpenAIJudge(**{**cfg, **kw})


def expected(item: JudgeItem) -> int:
    return server_score(build_prompt(item))


# ---------------------------------------------------------------------------------- prompt
FIELD_OF = {"emotion": "Emotion", "iemocap": "Emotion", "meld": "Emotion",
            "sarcasm": "Sarcasm", "age": "Age", "gender": "Gender"}  # fmt: skip


@pytest.mark.parametrize("category", labels.CATEGORIES)
def test_prompt_renders_the_category_label_line(category):
    for style in labels.STYLES[category]:
        item = make_item(1, category, style)
        prompt = build_prompt(item)
        user_block = (
            f"The information of the user:\n\nTranscription: {item.content}\n"
            + "\n".join(
                f"{f}: {style if f == FIELD_OF[category] else 'unknown'}"
                for f in ("Emotion", "Sarcasm", "Age", "Gender")
            )  # fmt: skip
            + "\n\nHere is the information of the agent:\n\n"
            + f"Transcription: {item.response_text}\nTone: {item.response_tone}\n\n"
        )
        assert user_block in prompt
        assert prompt.startswith("You are a human dialogue expert.")
        assert prompt.rstrip().endswith("The reason is _; The score is _ .")


def test_guideline_is_the_papers_text_without_artefacts():
    text = load_guideline().template
    for phrase in ("General guideline of Continuation Fitness", "5 Points - Perfect (Enhanced):",
                   "4 Points - Excellent (No Enhancement):", "3 Points - Average:",
                   "2 Points - Poor:", "1 Point - Very Poor:",
                   "suggesting masculinised perfume for a female is awkward",
                   "Reply to a angry user as if he/she is fearful"):  # fmt: skip
        assert phrase in text
    for artefact in ("####", "**", "1239", "1240", "PROMPT =", "\\_", "Source:", "<!--"):
        assert artefact not in text
    assert sorted(load_guideline().get_identifiers()) == ["agent_info", "user_info"]


def test_template_syntax_in_transcripts_is_copied_literally():
    nasty = "Pay $user_info and {x} and ${y} and $$ and $ and {0} and $agent_info now"
    item = make_item(2, content=nasty, response_text="reply ${user_info} {}", response_tone="$")
    prompt = build_prompt(item)
    assert f"Transcription: {nasty}\nEmotion:" in prompt
    assert "Transcription: reply ${user_info} {}\nTone: $\n" in prompt
    assert prompt.count("Transcription:") == 2  # each slot filled once, nothing injected
    assert prompt.count("You are a human dialogue expert") == 1


def test_each_prompt_is_built_from_its_own_item():
    a, b = make_item(1), make_item(2, category="sarcasm")
    assert build_prompt(a) != build_prompt(b)
    assert build_prompt(a) == build_prompt(make_item(1))  # pure function of the item
    assert prompt_sha256(a) != prompt_sha256(b)
    with_system = make_item(1, system="Be strict.")
    assert build_messages(with_system)[0] == {"role": "system", "content": "Be strict."}
    assert prompt_sha256(with_system) != prompt_sha256(a)


def test_item_rejects_a_label_outside_its_category():
    with pytest.raises(ValueError, match="unknown style 'child' for category 'emotion'"):
        make_item(1, "emotion", "child")


# ---------------------------------------------------------------------------------- parse
@pytest.mark.parametrize(("answer", "score", "reason"), [
    ("The reason is warm and fitting; The score is 5.", 5, "warm and fitting"),
    ("The reason is fine; The score is 4", 4, "fine"),
    ("the reason is ok; the score is 3 .", 3, "ok"),
    ("THE REASON IS LOUD; THE SCORE IS 2!", 2, "LOUD"),
    ("**The reason is** flat tone; **The score is** 2.", 2, "flat tone"),
    ("The reason is good; The score is **4**.", 4, "good"),
    ("**The reason is good; The score is 4.**", 4, "good"),
    ("The reason is: nice. The score is: 5", 5, "nice"),
    ("The reason is multi\nline; The score is\n1", 1, "multi\nline"),
    ("The score is 3/5 because it is average.", 3, ""),
    ("Some preamble. The reason is x; The score is 1.", 1, "x"),
    ("The reason is bad; The score is 7.", None, "bad"),
    ("The reason is meh; The score is 0.", None, "meh"),
    ("The reason is ok; The score is 10.", None, "ok"),
    ("The reason is ok; The score is 4.5.", None, "ok"),
    ("The reason is ok; The score is five.", None, "ok"),
    ("The reason is ok; The score is -1.", None, "ok"),
    ("The score is 6. Sorry, the score is 4.", None, ""),  # the first score decides
    ("I would give it a 4.", None, ""),
    ("The reason is only a reason", None, "only a reason"),
    ("", None, ""),
    (None, None, ""),
])  # fmt: skip
def test_parse_score(answer, score, reason):
    assert parse_score(answer) == (score, reason)


# ------------------------------------------------------------------------ OpenAI over HTTP
def test_scores_every_item_in_order_and_meters_usage(server):
    items = [make_item(i, c) for i, c in enumerate(labels.CATEGORIES * 2)]
    judge = make_judge(server)
    assert isinstance(judge, Judge)
    got = judge.score(items)
    assert [j.score for j in got] == [expected(it) for it in items]
    assert all(j.attempts == 1 and not j.parse_failed and j.error is None for j in got)
    assert got[0].reason == "fake judge"
    assert judge.meter.requests == len(items)
    assert judge.meter.prompt_tokens == sum(len(build_prompt(it)) // 4 for it in items)
    assert judge.meter.cost_usd == pytest.approx(
        (judge.meter.prompt_tokens * 2.0 + judge.meter.completion_tokens * 8.0) / 1e6
    )
    assert set(server.auth_headers) == {f"Bearer {KEY}"}  # the key came from the environment
    body = server.bodies[0]
    assert body["model"] == "gpt-4.1" and body["temperature"] == 0.0 and body["max_tokens"] == 256


def test_429_honours_retry_after_then_scores(server):
    item = make_item(1)
    server.script(item.content, RateLimited(retry_after=1))
    start = time.monotonic()
    [j] = make_judge(server).score([item])
    assert time.monotonic() - start >= 0.95  # waited Retry-After, not the 10 ms backoff
    assert (j.score, j.attempts, j.error) == (expected(item), 2, None)


def test_500_is_retried(server):
    item = make_item(1)
    server.script(item.content, ServerError(500), ServerError(503))
    [j] = make_judge(server).score([item])
    assert (j.score, j.attempts) == (expected(item), 3)
    assert server.arrived[sha256(build_prompt(item))] == 3


def test_slow_answer_past_timeout_is_retried(server):
    item = make_item(1)
    server.script(item.content, Slow(1.0))
    [j] = make_judge(server, timeout=0.3).score([item])
    assert (j.score, j.attempts, j.error) == (expected(item), 2, None)


def test_errors_after_the_last_retry_are_recorded_not_raised(server):
    slow, broken, fine = make_item(1), make_item(2), make_item(3)
    server.script(slow.content, Slow(1.0), Slow(1.0))
    server.script(broken.content, *[ServerError(500)] * 2)
    got = make_judge(server, timeout=0.3, max_retries=1).score([slow, broken, fine])
    assert [j.score for j in got] == [None, None, expected(fine)]
    assert got[0].error.startswith("APITimeoutError") and got[0].attempts == 2
    assert got[1].error.startswith("InternalServerError") and got[1].attempts == 2
    assert not got[0].parse_failed and not got[1].parse_failed


def test_drip_feed_is_cut_at_the_total_deadline_then_retried(server):
    """A server sending one byte per 50 ms never trips the per-read timeout: only the total
    deadline per request (``timeout``) ends the try."""
    item = make_item(1)
    server.script(item.content, Drip(interval=0.05, limit=8.0))
    start = time.monotonic()
    [j] = make_judge(server, timeout=0.5, max_retries=1).score([item])
    assert time.monotonic() - start < 3.0  # per read only, the drip held it 8 s
    assert (j.score, j.attempts, j.error) == (expected(item), 2, None)


def test_malformed_200_is_asked_again_then_counted_never_raised(server):
    """Invalid JSON and an HTML page with status 200 are unusable replies: asked again,
    then a parse failure (raw kept), like an answer without a score; the run goes on."""
    once, always, fine = make_item(1), make_item(2), make_item(3)
    server.script(once.content, Malformed(), HTML)
    server.script(always.content, HTML, Malformed(), HTML)
    got = make_judge(server, parse_retries=2).score([once, always, fine])
    assert (got[0].score, got[0].attempts, got[0].parse_failed) == (expected(once), 3, False)
    assert (got[1].score, got[1].parse_failed, got[1].error, got[1].attempts) == (
        None, True, None, 3)  # fmt: skip
    assert "502 Bad Gateway" in got[1].raw
    assert got[2].score == expected(fine)
    assert all(m["role"] == "user" for m in server.bodies[-1]["messages"])  # asked as it was


def test_no_score_is_reasked_then_recorded_as_parse_failure(server):
    item = make_item(1)
    server.script(item.content, *[NoScore()] * 3)
    [j] = make_judge(server, parse_retries=2).score([item])
    assert j.score is None and j.parse_failed and j.error is None
    assert j.raw == NoScore().text and j.attempts == 3
    reask = server.bodies[-1]["messages"]
    assert [m["role"] for m in reask] == ["user", "assistant", "user"]
    assert reask[0]["content"] == build_prompt(item) and reask[2]["content"] == REASK


def test_score_outside_1_to_5_is_reasked(server):
    once, always = make_item(1), make_item(2)
    server.script(once.content, Score(7))
    server.script(always.content, *[Score(7)] * 3)
    got = make_judge(server).score([once, always])
    assert (got[0].score, got[0].attempts, got[0].parse_failed) == (expected(once), 2, False)
    assert (got[1].score, got[1].parse_failed, got[1].attempts) == (None, True, 3)
    assert "The score is 7" in got[1].raw


def test_mixed_faults_in_one_run_give_correct_counts(server):
    items = [make_item(i, c) for i, c in enumerate(labels.CATEGORIES * 3)]
    server.script(items[0].content, RateLimited(retry_after=0.05))
    server.script(items[1].content, ServerError(502))
    server.script(items[2].content, *[NoScore()] * 3)
    server.script(items[3].content, *[ServerError(500)] * 4)
    server.script(items[4].content, Score(7))
    got = make_judge(server).score(items)
    assert sum(j.score is not None for j in got) == len(items) - 2
    assert [i for i, j in enumerate(got) if j.parse_failed] == [2]
    assert [i for i, j in enumerate(got) if j.error] == [3]
    assert [j.attempts for j in got[:5]] == [2, 2, 3, 4, 2]
    assert server.total(server.arrived) == len(items) + 1 + 1 + 2 + 3 + 1


def test_wrong_key_stops_the_run(server):
    server.script("query number", ServerError(401))
    with pytest.raises(RuntimeError, match="AuthenticationError.*OPENAI_API_KEY"):
        make_judge(server, max_concurrency=1).score([make_item(1)])


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIJudge(progress=False).score([make_item(1)])


def test_usage_meter_prices():
    meter = UsageMeter("gpt-4.1-mini-2025-04-14")
    meter.add(Usage(1_000_000, 500_000))
    assert meter.cost_usd == pytest.approx(0.40 + 0.80)
    assert UsageMeter("my-local-llama").cost_usd is None
    assert UsageMeter("x", prices={"x": (1.0, 1.0)}, discount=0.5).price == (1.0, 1.0)


# -------------------------------------------------------------------------------- cache
def test_cache_serves_reruns_and_keeps_parse_failures(server, tmp_path):
    items = [make_item(i) for i in range(6)]
    server.script(items[0].content, *[NoScore()] * 3, Score(4))
    server.script(items[1].content, *[ServerError(500)] * 4)
    with CachedJudge(make_judge(server), tmp_path) as judge:
        first = judge.score(items)
    assert first[0].parse_failed and first[1].error and not any(j.cached for j in first)
    arrived = server.total(server.arrived)
    with CachedJudge(make_judge(server), tmp_path) as judge:
        second = judge.score(items)
    assert [j.cached for j in second] == [True, False] + [True] * 4
    assert second[0].parse_failed and second[0].raw == NoScore().text  # cached, not re-paid
    assert second[1].score == expected(items[1])  # errors are not cached: retried
    assert [j.score for j in second[2:]] == [j.score for j in first[2:]]
    assert server.total(server.arrived) == arrived + 1
    with CachedJudge(make_judge(server), tmp_path, retry_failures=True) as judge:
        third = judge.score(items)
    assert third[0].score == 4 and not third[0].cached
    assert [j.cached for j in third[1:]] == [True] * 5


def test_cache_sends_identical_prompts_once(server, tmp_path):
    a = make_item(1)
    b = make_item(1, key="other-key")  # same prompt, different id
    with CachedJudge(make_judge(server), tmp_path) as judge:
        got = judge.score([a, b, a])
    assert [j.score for j in got] == [expected(a)] * 3
    assert server.total(server.arrived) == 1


def test_cache_is_per_judge_name(server, tmp_path):
    item = make_item(1)
    with CachedJudge(make_judge(server), tmp_path) as judge:
        judge.score([item])
    with CachedJudge(make_judge(server, name="other-judge"), tmp_path) as judge:
        assert not judge.score([item])[0].cached


CRASH_SCRIPT = textwrap.dedent("""
    import json, sys
    from paras2s_pl.bench.cache import CachedJudge
    from paras2s_pl.bench.judges import OpenAIJudge
    from paras2s_pl.bench.prompt import JudgeItem
    items = [JudgeItem(**d) for d in json.load(open(sys.argv[1]))]
    judge = OpenAIJudge(base_url=sys.argv[2], max_concurrency=3, timeout=30, max_retries=0,
                        progress=False)
    CachedJudge(judge, sys.argv[3]).score(items)
""")


def test_killed_run_loses_no_finished_call_and_rerun_repeats_none(server, tmp_path):
    """SIGKILL the scoring process while 3 requests are in flight, after 5 were answered.

    Each worker commits its answer before sending its next request, so when 5 + 3 requests
    have arrived every answered one is on disk. The rerun then re-sends only the 7 never
    answered (3 of them had arrived, unanswered, before the kill): no prompt is answered
    twice.
    """
    items = [make_item(i, c) for i, c in enumerate(labels.CATEGORIES * 2)]
    (tmp_path / "items.json").write_text(json.dumps([asdict(it) for it in items]))
    server.hold_after(5)
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path / "items.json"), server.url,
         str(tmp_path / "cache")], env={**os.environ, "OPENAI_API_KEY": KEY})  # fmt: skip
    try:
        assert server.wait_for_arrivals(5 + 3, timeout=20), "scoring subprocess stalled"
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert server.total(server.answered) == 5
    server.hold_after(None)
    with CachedJudge(make_judge(server), tmp_path / "cache") as judge:
        got = judge.score(items)
    assert [j.score for j in got] == [expected(it) for it in items]
    assert sum(j.cached for j in got) == 5
    assert len(server.answered) == len(items) and set(server.answered.values()) == {1}


def test_ctrl_c_mid_run_keeps_finished_calls(server, tmp_path):
    items = [make_item(i) for i in range(8)]
    seen = []

    def interrupt_after_three(i, judgement):
        seen.append(i)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with CachedJudge(make_judge(server, max_concurrency=1), tmp_path) as judge:
        with pytest.raises(KeyboardInterrupt):
            judge.score(items, on_result=interrupt_after_three)
    with CachedJudge(make_judge(server), tmp_path) as judge:
        got = judge.score(items)
    assert sum(j.cached for j in got) == 3
    assert set(server.answered.values()) == {1} and len(server.answered) == len(items)


def test_exception_mid_run_keeps_the_answers_in_flight(server, tmp_path):
    """A fatal error while three answers are on their way: they are waited for and cached
    before the exception leaves ``score`` (and the cache closes); a rerun buys none again."""
    items = [make_item(i) for i in range(8)]
    for it in items[:3]:
        server.script(it.content, Delayed(1.0))
    server.script(items[3].content, ServerError(401))
    with CachedJudge(make_judge(server, max_concurrency=4), tmp_path) as judge:
        with pytest.raises(RuntimeError, match="AuthenticationError"):
            judge.score(items)
    assert server.total(server.answered) == 3
    with CachedJudge(make_judge(server), tmp_path) as judge:
        got = judge.score(items)
    assert sum(j.cached for j in got) == 3
    assert len(server.answered) == len(items) and set(server.answered.values()) == {1}


def test_ctrl_c_in_the_main_thread_keeps_the_answers_in_flight(
    server, tmp_path, monkeypatch, request
):
    """Ctrl-C (SIGINT to this process) while four answers are on their way: the server
    answers them only once the judge has taken the Ctrl-C (no timing, so a busy machine
    cannot finish the run before the signal lands)."""
    items = [make_item(i) for i in range(10)]
    server.gate_after(2)
    finish = OpenAIJudge._finish_in_flight

    def finish_then_release(self, *args):
        server.release()
        return finish(self, *args)

    monkeypatch.setattr(OpenAIJudge, "_finish_in_flight", finish_then_release)
    # a suite started in the background by a shell has SIGINT ignored: restore Ctrl-C
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))

    def interrupt() -> None:
        if server.wait_for_arrivals(2 + 4, timeout=10):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with CachedJudge(make_judge(server, max_concurrency=4), tmp_path) as judge:
        with pytest.raises(KeyboardInterrupt):
            judge.score(items)
    assert server.total(server.answered) == 6
    server.gate_after(None)
    with CachedJudge(make_judge(server), tmp_path) as judge:
        got = judge.score(items)
    assert sum(j.cached for j in got) == 6
    assert len(server.answered) == len(items) and set(server.answered.values()) == {1}


# -------------------------------------------------------------------------------- batch
def batch_line(item: JudgeItem, status: int, content: str | None = None, error=None) -> str:
    body = ({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
             "usage": {"prompt_tokens": 1000, "completion_tokens": 10}}
            if status == 200 else {"error": {"message": "server exploded"}})  # fmt: skip
    response = None if error else {"status_code": status, "request_id": "r", "body": body}
    return json.dumps({"id": f"batch_req_{item.key}", "custom_id": item.key,
                       "response": response, "error": error})  # fmt: skip


def test_batch_jsonl_round_trip(tmp_path):
    items = [make_item(i, c) for i, c in enumerate(labels.CATEGORIES)]
    judge = OpenAIBatchJudge()
    path = judge.write_requests(items, tmp_path / "requests.jsonl")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == [it.key for it in items]
    assert {(x["method"], x["url"]) for x in lines} == {("POST", "/v1/chat/completions")}
    assert lines[3]["body"]["messages"] == build_messages(items[3])
    assert lines[3]["body"]["model"] == "gpt-4.1" and lines[3]["body"]["temperature"] == 0.0

    out = [batch_line(items[0], 200, "The reason is a; The score is 5."),
           batch_line(items[1], 200, "**The reason is** b; **The score is** 2."),
           batch_line(items[2], 200, "no score here"),
           batch_line(items[3], None, error={"code": "batch_expired", "message": "expired"}),
           json.dumps({"custom_id": "stranger", "response": None, "error": None}),
           batch_line(items[0], 200, "The reason is dup; The score is 1.")]  # fmt: skip
    (tmp_path / "out.jsonl").write_text("\n".join(reversed(out)) + "\n")
    (tmp_path / "err.jsonl").write_text(batch_line(items[4], 500) + "\n")
    got = judge.read_results(items, tmp_path / "out.jsonl", tmp_path / "err.jsonl")
    report = got.report
    assert isinstance(got, list) and len(got) == len(items)
    assert [(j.score, j.reason) for j in got[:2]] == [(1, "dup"), (2, "b")]  # first line wins
    assert got[2].parse_failed and got[2].raw == "no score here"
    assert "expired" in got[3].error and "500" in got[4].error and "missing" in got[5].error
    keys = [it.key for it in items]
    assert report.missing == [keys[5]] and report.failed == [keys[3], keys[4]]
    assert report.parse_failed == [keys[2]] and report.unknown == ["stranger"]
    assert report.duplicates == [keys[0]]
    assert report.counts == {"total": 6, "scored": 2, "missing": 1, "failed": 2,
                             "parse_failed": 1, "unknown": 1, "duplicates": 1}  # fmt: skip
    assert report.retry_keys == [keys[5], keys[3], keys[4], keys[2]]
    assert judge.meter.prompt_tokens == 3000
    assert judge.meter.cost_usd == pytest.approx(0.5 * (3000 * 2 + 30 * 8) / 1e6)


def test_batch_custom_ids_must_be_unique(tmp_path):
    items = [make_item(1), make_item(2), make_item(1, content="else")]
    with pytest.raises(ValueError, match=r"duplicate JudgeItem keys \['q001'\]"):
        OpenAIBatchJudge().write_requests(items, tmp_path / "r.jsonl")
    assert check_unique_keys(items[:2]) == {"q001": 0, "q002": 1}


def test_batch_submit_and_poll_drive_the_files_and_batches_api(tmp_path):
    items = [make_item(1), make_item(2)]
    output = batch_line(items[0], 200, "The reason is r; The score is 3.") + "\n"
    states = iter(["validating", "in_progress", "completed"])
    uploads = []

    def retrieve(batch_id):
        return SimpleNamespace(status=next(states), request_counts=None, output_file_id="f-out",
                               error_file_id=None, errors=None)  # fmt: skip

    stub = SimpleNamespace(
        files=SimpleNamespace(
            create=lambda file, purpose: uploads.append((file.read(), purpose))
            or SimpleNamespace(id="f-in"),
            content=lambda fid: SimpleNamespace(read=lambda: output.encode())),
        batches=SimpleNamespace(create=lambda **kw: SimpleNamespace(id="batch-1", **kw),
                                retrieve=retrieve))  # fmt: skip
    judge = OpenAIBatchJudge(workdir=str(tmp_path), poll_interval=0)
    judge._client = stub
    seen = {}
    got = judge.score(items, on_result=seen.__setitem__)
    assert uploads[0][1] == "batch" and uploads[0][0].count(b"\n") == 2
    assert [j.score for j in got] == [3, None] and got.report.missing == [items[1].key]
    assert seen == dict(enumerate(got))


# ----------------------------------------------------------------------------- secrets
def test_api_key_never_in_repr_logs_or_cache(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    items = [make_item(i) for i in range(4)]
    server.script(items[0].content, RateLimited(retry_after=0.01))
    server.script(items[1].content, *[ServerError(500)] * 4)
    server.script(items[2].content, *[NoScore()] * 3)
    judge = make_judge(server)
    cached = CachedJudge(judge, tmp_path / "cache")
    cached.score(items)
    batch = OpenAIBatchJudge()
    batch.write_requests(items, tmp_path / "batch" / "requests.jsonl")
    assert "APIStatusError" in caplog.text or "InternalServerError" in caplog.text  # logs ran
    for text in (repr(judge), repr(cached), repr(batch), caplog.text, str(judge.meter)):
        assert KEY not in text
    cached.close()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in files)
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p


def test_api_key_echoed_by_the_server_is_masked_everywhere(server, tmp_path, caplog):
    """Answers, reasons, parse-failure warnings, the cache and a 401's error all echo the
    key here; none of them may carry it."""
    caplog.set_level(logging.DEBUG)
    scored, unscored = make_item(1), make_item(2)
    server.script(scored.content, EchoKey())
    server.script(unscored.content, *[EchoKey(score=None)] * 3)
    with CachedJudge(make_judge(server), tmp_path / "cache") as judge:
        got = judge.score([scored, unscored])
    assert got[0].score == 3 and "***" in got[0].reason and got[1].parse_failed
    assert "parse failure" in caplog.text  # the warning that logs the raw answer ran
    for j in got:
        assert KEY not in j.raw + j.reason
    assert KEY not in caplog.text
    for p in (tmp_path / "cache").iterdir():
        assert KEY.encode() not in p.read_bytes(), p

    server.script("query number 3", EchoKey(status=401))
    with pytest.raises(RuntimeError, match="AuthenticationError") as info:
        make_judge(server, max_concurrency=1).score([make_item(3)])
    shown = "".join(traceback.format_exception(info.value))
    assert "Incorrect API key provided: ***" in shown and KEY not in shown
    assert KEY not in caplog.text
