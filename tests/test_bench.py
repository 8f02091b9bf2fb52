"""ParaS2SBench evaluation: responses, reference systems, evaluate, tables, correlation, CLI.

The ``integration`` tests build a small demo (8 contents per category → 16 test queries)
and score the baseline and the topline with the embedded parts (pocketsphinx, prosody
captioner, rubric judge): about a minute on 2 cores. Everything else uses instant stub
parts, the tiny sine-tone shards of :mod:`paras2s_pl.testing`, or the fake OpenAI server
of ``judge_server.py``.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from bench_stubs import FixedCaptioner, LenASR
from judge_server import (
    HTML,
    Delayed,
    EchoKey,
    JudgeServer,
    Malformed,
    NoScore,
    ServerError,
    default_score,
)
from scipy.stats import pearsonr

from paras2s_pl.audio.io import encode_audio
from paras2s_pl.bench import correlate as corr
from paras2s_pl.bench import tables
from paras2s_pl.bench.evaluate import evaluate
from paras2s_pl.bench.judges import OpenAIJudge
from paras2s_pl.bench.responses import DirResponses, ShardResponses, open_responses
from paras2s_pl.bench.rubric import RubricJudge, rubric_score
from paras2s_pl.bench.systems import (
    OpenAIResponder,
    SeedResponder,
    build_responses,
    parse_reply,
)
from paras2s_pl.cli import COMMANDS, main
from paras2s_pl.data import labels
from paras2s_pl.data.seed import load_seed
from paras2s_pl.testing import tone, write_tiny_set

TESTS = Path(__file__).parent
#: The caption word the prosody captioner gives each reference response tone (measured on
#: the assistant voice: calm → calm 3/12, soft 9/12; empathetic, gentle, apologetic → soft).
CAPTION_OF = {t: t for t in labels.RESPONSE_TONES} | dict.fromkeys(
    ("empathetic", "gentle", "apologetic"), "soft"
)


def tiny_testset(root: Path, n: int = 12) -> Path:
    write_tiny_set(root, "test", n=n, schema="demo")
    return root


def run_stub(root, responses, system, out, judge=None, asr=None) -> dict:
    """``evaluate`` with the instant stub parts (rubric judge unless given)."""
    parts = (asr or LenASR(), FixedCaptioner(), judge or RubricJudge())
    return evaluate(root, "test", responses, system, *parts, out, progress=False)


def server_answer(transcript: str) -> str:
    """What ``JudgeServer`` answers to the responder's prompt for ``transcript`` + "sad"."""
    prompt = OpenAIResponder().prompt(transcript, "sad")
    return f"The reason is fake judge; The score is {default_score(prompt)}."


def rows(spec: str) -> list[dict]:
    """Score rows from lines "system key category style score [pair]" (score "-": missing,
    "?": parse failure)."""
    out = []
    for line in spec.strip().splitlines():
        system, key, category, style, score, *pair = line.split()
        status = {"-": "missing", "?": "parse_failed"}.get(score, "scored")
        value = int(score) if status == "scored" else None
        out.append(dict(system=system, key=key, category=category, style=style, score=value,
                        status=status, pair_id=pair[0] if pair else ""))  # fmt: skip
    return out


# ------------------------------------------------------------------------ responses
def test_dir_and_shard_responses(tmp_path):
    root = tiny_testset(tmp_path / "set", n=3)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "s0000.flac").write_bytes(encode_audio(tone(0.3, 200), 16000))
    (tmp_path / "dir" / "s0001.wav").write_bytes(encode_audio(tone(0.2, 200, 8000), 8000, "wav"))
    d = open_responses(tmp_path / "dir", "test")
    assert isinstance(d, DirResponses) and len(d) == 2
    assert d.get("s0000")[1] == 16000 and d.get("s0001")[1] == 8000 and d.get("s0002") is None
    s = open_responses(root, "test")
    assert isinstance(s, ShardResponses) and len(s) == 3
    wav, sr = s.get("s0001")
    assert sr == 16000 and wav.shape == (int(0.4 * 16000),)  # the resp.flac entry
    with pytest.raises(FileNotFoundError, match="without a 'dev' split"):
        open_responses(root, "dev")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DirResponses(tmp_path / "nope")


# ------------------------------------------------------------------------ responders
def test_seed_responder_is_style_blind_without_a_label():
    item = next(i for i in load_seed() if i.category == "emotion")
    responder = SeedResponder()
    a, b = item.styles
    heard = item.content.lower().rstrip(".") + " um"  # ASR-like: case, punctuation, noise
    assert responder.respond(heard, None) == (item.responses[a].text, "neutral")
    assert responder.respond(heard, b) == (item.responses[b].text, item.responses[b].tone)
    assert responder.respond("", None)[1] == "neutral"


def test_parse_reply():
    assert parse_reply("Tone: calm\nReply: Take a breath.") == ("Take a breath.", "calm")
    assert parse_reply("**Tone:** Cheerful\n**Reply:** Yay!") == ("Yay!", "cheerful")
    assert parse_reply("Just text.") == ("Just text.", None)


def test_openai_responder_sends_the_style_and_falls_back_to_neutral():
    with JudgeServer() as server:  # answers in the judge format: no "Tone:" line
        responder = OpenAIResponder(model="m", base_url=server.url, max_retries=0)
        text, tone = responder.respond("I lost my job today.", "sad")
        assert (text, tone) == (server_answer("I lost my job today."), "neutral")
        assert responder.respond("hello", None)[1] == "neutral"
        body = server.bodies[0]
    assert body["model"] == "m" and "sad: low, flat pitch" in body["messages"][1]["content"]
    assert "Tone: <tone>" in body["messages"][1]["content"]


# ------------------------------------------------------------------------ rubric
def test_rubric_scores_topline_5_and_reversed_emotion_low():
    item = next(i for i in load_seed() if set(i.styles) == {"happy", "sad"})
    sad, happy = item.responses["sad"], item.responses["happy"]
    assert rubric_score("sad", sad.text, CAPTION_OF[sad.tone])[0] == 5
    assert rubric_score("happy", happy.text, CAPTION_OF[happy.tone])[0] == 5
    assert rubric_score("sad", happy.text, CAPTION_OF[happy.tone])[0] <= 2  # joy to a sad user
    assert rubric_score("happy", sad.text, CAPTION_OF[sad.tone])[0] <= 2


def test_rubric_separates_matching_and_swapped_replies_over_all_seed_items():
    """Measured: 567/576 = 98.4 % matching ≥ 4; 559/576 = 97.0 % swapped ≤ 2."""
    matching, swapped = [], []
    for item in load_seed():
        for style, other in (item.styles, item.styles[::-1]):
            mine, theirs = item.responses[style], item.responses[other]
            matching.append(rubric_score(style, mine.text, CAPTION_OF[mine.tone])[0] >= 4)
            swapped.append(rubric_score(style, theirs.text, CAPTION_OF[theirs.tone])[0] <= 2)
    n = len(matching)
    print(f"matching ≥4: {sum(matching)}/{n}, swapped ≤2: {sum(swapped)}/{n}")
    assert np.mean(matching) >= 0.9 and np.mean(swapped) >= 0.9


# ------------------------------------------------------------------------ evaluate
def test_evaluate_counts_missing_parse_failures_and_errors(tmp_path):
    root = tiny_testset(tmp_path / "set")
    responses = tmp_path / "resp"
    responses.mkdir()
    for i in range(12):
        if i not in (2, 5):  # no response to s0002 and s0005
            (responses / f"s{i:04d}.flac").write_bytes(encode_audio(tone(0.3, 250), 16000))
    (responses / "s0005.flac").write_bytes(b"not audio")  # undecodable → error row
    with JudgeServer() as server:
        server.script("sample number 3 says", NoScore(), NoScore(), NoScore())
        server.script("sample number 4 says", *[ServerError()] * 2)
        server.script("sample number 6 says", Malformed(), HTML)  # unusable 200s: asked again
        judge = OpenAIJudge(
            base_url=server.url, max_retries=1, parse_retries=2, backoff_base=0.01, progress=False
        )
        summary = run_stub(root, DirResponses(responses), "sys", tmp_path / "runs", judge)
    c = summary["all"]
    assert (c["n"], c["scored"], c["missing"], c["parse_failed"], c["error"]) == (12, 8, 1, 1, 2)
    rows = tables.read_jsonl(tmp_path / "runs" / "sys" / "scores.jsonl")
    assert [r["key"] for r in rows] == [f"s{i:04d}" for i in range(12)]
    by_key = {r["key"]: r for r in rows}
    assert by_key["s0002"]["status"] == "missing" and by_key["s0002"]["score"] is None
    assert by_key["s0003"]["parse_failed"] and "quite nice" in by_key["s0003"]["raw"]
    assert "cannot decode" in by_key["s0005"]["error"]
    assert by_key["s0004"]["status"] == "error" and by_key["s0004"]["score"] is None
    scored = [r["score"] for r in rows if r["status"] == "scored"]
    assert summary["all"]["mean"] == pytest.approx(np.mean(scored), abs=1e-4)
    markdown, built = tables.write_tables(tmp_path / "runs")
    assert built["counts"]["sys"] == dict(judge="gpt-4.1", stand_in=False, queries=12, scored=8,
                                          missing=1, parse_failed=1, error=2)  # fmt: skip
    assert "| sys | gpt-4.1 | 12 | 8 | 1 | 1 | 2 |" in markdown


CRASH_SCRIPT = textwrap.dedent("""
    import signal, sys
    # a shell starts background jobs with SIGINT ignored, and Python then keeps it ignored:
    # restore Ctrl-C, so the SIGINT test holds however the suite was started
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, sys.argv[4])
    from bench_stubs import FixedCaptioner, LenASR
    from paras2s_pl.bench.evaluate import evaluate
    from paras2s_pl.bench.judges import OpenAIJudge
    from paras2s_pl.bench.responses import ShardResponses
    judge = OpenAIJudge(base_url=sys.argv[2], max_concurrency=3, timeout=30, max_retries=0,
                        progress=False)
    evaluate(sys.argv[1], "test", ShardResponses(sys.argv[1], "test"), "sys", LenASR(),
             FixedCaptioner(), judge, sys.argv[3], progress=False)
""")


def test_evaluate_killed_mid_judging_then_rerun_repeats_no_request(tmp_path):
    root = tiny_testset(tmp_path / "set")
    with JudgeServer() as server:
        server.hold_after(5)
        args = [str(a) for a in (root, server.url, tmp_path / "runs", TESTS)]
        proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, *args])
        try:
            assert server.wait_for_arrivals(5 + 3, timeout=180), "evaluate subprocess stalled"
        finally:
            proc.kill()
            proc.wait(timeout=10)
        assert server.total(server.answered) == 5
        assert not (tmp_path / "runs" / "sys" / "scores.jsonl").exists()
        server.hold_after(None)
        asr = LenASR()
        judge = OpenAIJudge(base_url=server.url, timeout=5, progress=False)
        summary = run_stub(root, ShardResponses(root, "test"), "sys", tmp_path / "runs", judge, asr)
        assert summary["all"]["scored"] == 12 and summary["all"]["cached"] == 5
        assert len(server.answered) == 12 and set(server.answered.values()) == {1}
        assert asr.calls == 0  # transcripts and tones came from perception.jsonl


def test_evaluate_interrupted_by_sigint_keeps_answers_in_flight_and_rerun_buys_none(tmp_path):
    """SIGINT to a running ``evaluate`` after 5 answers, with 3 more on their way (answered
    only once it has taken the SIGINT): it exits only after caching those 3, and the rerun
    sends no answered prompt again."""
    root = tiny_testset(tmp_path / "set")
    with JudgeServer() as server:
        server.gate_after(5)
        args = [str(a) for a in (root, server.url, tmp_path / "runs", TESTS)]
        proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, *args],
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert server.wait_for_arrivals(5 + 3, timeout=180), "evaluate subprocess stalled"
            proc.send_signal(signal.SIGINT)
            lines = []  # its warning says it took the SIGINT and waits for the 3 in flight
            while (line := proc.stderr.readline()) and "requests in flight" not in line:
                lines.append(line)
            server.release()
            rest = proc.communicate(timeout=60)[1]
            err = "".join(lines) + line + rest
        finally:
            proc.kill()
        assert proc.returncode != 0 and "KeyboardInterrupt" in err
        assert "closed database" not in err
        assert server.total(server.answered) == 8
        server.delay_after(None)
        judge = OpenAIJudge(base_url=server.url, timeout=5, progress=False)
        summary = run_stub(root, ShardResponses(root, "test"), "sys", tmp_path / "runs", judge)
        assert summary["all"]["scored"] == 12 and summary["all"]["cached"] == 8
        assert len(server.answered) == 12 and set(server.answered.values()) == {1}


def test_evaluate_failing_mid_judging_keeps_answers_in_flight(tmp_path):
    """A fatal judge error (401) while 3 answers are on their way: evaluate raises after
    caching them; the rerun buys none of them again."""
    root = tiny_testset(tmp_path / "set")
    with JudgeServer() as server:
        for i in range(3):
            server.script(f"sample number {i} says", Delayed(1.0))
        server.script("sample number 3 says", ServerError(401))
        judge = OpenAIJudge(base_url=server.url, max_concurrency=4, progress=False)
        with pytest.raises(RuntimeError, match="AuthenticationError"):
            run_stub(root, ShardResponses(root, "test"), "sys", tmp_path / "runs", judge)
        assert server.total(server.answered) == 3
        judge = OpenAIJudge(base_url=server.url, progress=False)
        summary = run_stub(root, ShardResponses(root, "test"), "sys", tmp_path / "runs", judge)
        assert summary["all"]["scored"] == 12 and summary["all"]["cached"] == 3
        assert len(server.answered) == 12 and set(server.answered.values()) == {1}


def test_evaluate_masks_an_api_key_echoed_by_the_judge(tmp_path, monkeypatch):
    key = "sk-test-ECHOED-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    root = tiny_testset(tmp_path / "set", n=4)
    with JudgeServer() as server:
        server.script("sample number 1 says", EchoKey())
        server.script("sample number 2 says", *[EchoKey(score=None)] * 3)
        judge = OpenAIJudge(base_url=server.url, backoff_base=0.01, progress=False)
        summary = run_stub(root, ShardResponses(root, "test"), "sys", tmp_path / "runs", judge)
    assert summary["all"]["scored"] == 3 and summary["all"]["parse_failed"] == 1
    text = (tmp_path / "runs" / "sys" / "scores.jsonl").read_text()
    assert "your key ***" in text
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


# ------------------------------------------------------------------------ tables
def test_table3_averages_and_empty_categories():
    got = tables.table3_row(rows("""
        a 1 age adult 4
        a 2 age child 2
        a 3 emotion sad 5
        a 4 gender male 1
        a 5 sarcasm sincere 3
        a 6 meld happy 4
        a 7 meld sad -
        a 8 sarcasm sincere ?
    """))  # fmt: skip
    columns = "Age|Emotion|Gender|Sarcasm|Synthetic avg|IEMOCAP|MELD|Real avg|Overall"
    assert list(got) == list(tables.TABLE3_COLUMNS) == columns.split("|")
    assert got["Age"] == 3 and got["Sarcasm"] == 3 and got["MELD"] == 4
    assert got["Synthetic avg"] == pytest.approx((3 + 5 + 1 + 3) / 4)
    assert got["IEMOCAP"] is None and got["Real avg"] == 4
    assert got["Overall"] == pytest.approx((3 + 5 + 1 + 3 + 4) / 5)  # available categories


def test_pair_analysis():
    got = tables.pair_analysis(rows("""
        a p1a emotion happy 5 p1
        a p1b emotion sad 1 p1
        a p2a emotion happy 4 p2
        a p2b emotion sad 5 p2
        a p3a emotion happy 3 p3
        a p3b emotion sad 3 p3
        a p4a emotion happy 5 p4
        a p4b emotion sad - p4
    """))  # fmt: skip
    assert got["emotion"] == {"pairs": 3, "incomplete": 1, "style_aware": 1 / 3, "one_sided": 1 / 3}


# ------------------------------------------------------------------------ correlation
def write_csv(path: Path, lines: str) -> Path:
    path.write_text("key,system,annotator,score,comment\n" + textwrap.dedent(lines).lstrip())
    return path


def test_correlate_pearson_by_hand_and_rankings(tmp_path):
    """auto 1..5 vs human 2,1,4,3,5: deviations (-2,-1,0,1,2) and (-1,-2,1,0,2);
    Σxy = 2+2+0+0+4 = 8, Σx² = Σy² = 10, so r = 8/10 = 0.8."""
    auto = rows("""
        A k0 emotion sad 1
        A k1 emotion sad 2
        A k2 emotion happy 3
        A k3 emotion happy 4
        A k4 emotion happy 5
        B k0 age adult 2
        B k1 age child 4
        B k2 age child -
    """)  # fmt: skip
    human = write_csv(tmp_path / "h.csv", "k0,A,ann1,2,\nk4,A,ann2,6,\n")
    with pytest.raises(ValueError, match=r"h.csv:3: field 'score' is '6'"):
        corr.read_human(human)  # a score outside 1..5 is rejected, naming its line
    write_csv(human, """\
        k0,A,ann1,2,
        k1,A,ann1,1,
        k2,A,ann1,4,
        k3,A,ann1,3,
        k4,A,ann1,5,
        k4,A,ann2,5,a second annotator
        k0,B,ann1,1,
        k1,B,ann1,5,
        k2,B,ann1,3,
        k9,B,,,not rated yet
    """)  # fmt: skip
    scores, counts = corr.read_human(human)
    assert counts == {"rows": 10, "unrated": 1} and scores[("A", "k4")] == [5.0, 5.0]
    result = corr.correlate(auto, scores)
    assert result["table2"]["emotion"]["r"] == pytest.approx(0.8)
    assert result["table2"]["emotion"]["n"] == 5
    assert result["table2"]["age"] == {"r": None, "p": None, "n": 2}  # too few pairs
    expect = pearsonr([1, 2, 3, 4, 5, 2, 4], [2, 1, 4, 3, 5, 1, 5])
    assert result["table2"]["all"]["r"] == pytest.approx(expect.statistic)
    assert result["table2"]["all"]["p"] == pytest.approx(expect.pvalue)
    a, b = result["table1"]["A"], result["table1"]["B"]
    assert a["avg_auto"] == a["avg_human"] == b["avg_auto"] == b["avg_human"] == 3
    assert a["rank_auto"] == a["rank_human"] == b["rank_auto"] == 1  # ties share the rank
    assert result["auto_unscored"] == 1 and result["pairs"] == 7
    markdown = corr.render_markdown(result)
    assert "| Pearson | – | 0.800 |" in markdown and "3.000 (1)" in markdown


def test_rankings_detect_a_switch():
    auto = rows("A k emotion sad 5\nB k emotion sad 3\nC k emotion sad 1")
    result = corr.correlate(auto, {("A", "k"): [3.0], ("B", "k"): [4.0], ("C", "k"): [1.0]})
    got = [(t["rank_auto"], t["rank_human"]) for t in result["table1"].values()]
    assert got == [(1, 2), (2, 1), (3, 3)] and result["rank_changes"] == 2


def test_export_human_template(tmp_path):
    root = tiny_testset(tmp_path / "set", n=8)
    for name in ("sys1", "sys2"):
        run_stub(root, ShardResponses(root, "test"), name, tmp_path / "runs")
    out = tmp_path / "human" / "template.csv"
    got = corr.export_human_template(tmp_path / "runs", out, per_category=1)
    assert got["rows"] == 8 and got["queries"] == 4  # one query per category × 2 systems
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == corr.TEMPLATE_COLUMNS
    assert {r["system"] for r in rows} == {"sys1", "sys2"}
    assert all(r["score"] == "" and r["annotator"] == "" for r in rows)
    for r in rows:
        assert (out.parent / r["query_audio"]).exists()
        assert (out.parent / r["response_audio"]).exists()
        assert r["system"] not in r["response_audio"]  # file names do not reveal the system
    for r in rows:
        r.update(annotator="me", score="4")
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=corr.TEMPLATE_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    scores, _ = corr.read_human(out)
    assert corr.correlate(corr.read_auto(tmp_path / "runs"), scores)["pairs"] == 8


# ------------------------------------------------------------------------ CLI
def test_bench_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in ("respond", "run", "table", "correlate", "export-human"):
        assert name in out and name in COMMANDS["bench"]
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "run", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in "testset responses judge judge_model judge_base_url asr captioner out".split():
        assert f"--{option}" in out


def test_cli_rejects_an_unknown_judge(tmp_path, capsys):
    root = tiny_testset(tmp_path / "set", n=2)
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "run", "--testset", str(root), "--responses", str(root), "--judge", "gpt5",
              "--out", str(tmp_path / "runs")])  # fmt: skip
    assert exit_.value.code == 2
    assert "unknown judge 'gpt5'; choose one of ['rubric', 'openai', 'openai_batch']" in (
        capsys.readouterr().err
    )


# ------------------------------------------------------------------------ demo end to end
@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """Baseline (Python API) and topline (the CLI) on the small demo's test split, with the
    embedded parts throughout."""
    from paras2s_pl.audio.asr import PocketSphinxASR
    from paras2s_pl.audio.style import ProsodyCaptioner
    from paras2s_pl.data.demo import build_demo

    root = tmp_path_factory.mktemp("bench")
    demo, runs, responses = root / "demo", root / "runs", root / "responses"
    build_demo(demo, contents_per_category=8, workers=1)
    asr = PocketSphinxASR()
    build_responses("baseline", demo, "test", responses / "baseline", asr=asr, progress=False)
    dropped = sorted((responses / "baseline").glob("*.flac"))[0]
    dropped.unlink()  # one query the baseline did not answer
    evaluate(demo, "test", DirResponses(responses / "baseline"), "baseline", asr,
             ProsodyCaptioner(), RubricJudge(), runs, progress=False)  # fmt: skip
    cli = ["--testset", str(demo)]
    main(["bench", "respond", "--system", "topline", *cli, "--out", str(responses / "topline")])
    main(["bench", "run", *cli, "--responses", str(responses / "topline"), "--out", str(runs)])
    return runs, dropped.stem


@pytest.mark.integration
def test_demo_table3_topline_beats_baseline_on_every_category(demo_runs, capsys):
    runs, dropped = demo_runs
    main(["bench", "table", "--runs", str(runs)])
    markdown = capsys.readouterr().out
    print(markdown)
    built = json.loads((runs / "table.json").read_text())
    assert built["systems"] == ["baseline", "topline"]
    assert built["columns"] == list(tables.TABLE3_COLUMNS)
    base, top = built["table3"]["baseline"], built["table3"]["topline"]
    for col in ("Age", "Emotion", "Gender", "Sarcasm", "Synthetic avg", "Overall"):
        assert top[col] > base[col], col
    assert top["IEMOCAP"] is None and top["Real avg"] is None  # no real speech in the demo
    assert (
        "| System | Age | Emotion | Gender | Sarcasm | Synthetic avg | IEMOCAP | MELD | "
        "Real avg | Overall |"
    ) in markdown
    assert "| – | – | – |" in markdown and "rubric stand-in for the LLM judge" in markdown
    assert built["counts"]["baseline"]["missing"] == 1
    expect = dict(judge="rubric-v2", stand_in=True, queries=16, scored=16, missing=0,
                  parse_failed=0, error=0)  # fmt: skip
    assert built["counts"]["topline"] == expect
    missing = [
        r for r in tables.read_jsonl(runs / "baseline" / "scores.jsonl") if r["status"] == "missing"
    ]
    assert [r["key"] for r in missing] == [dropped]


@pytest.mark.integration
def test_policy_system_answers_every_query_and_is_scored(demo_runs, tmp_path):
    from paras2s_pl.testing import write_tiny_policy

    runs, _ = demo_runs
    demo = runs.parent / "demo"
    policy = write_tiny_policy(tmp_path / "base_policy")
    out = tmp_path / "responses" / "base"
    main(["bench", "respond", "--system", "base", "--policy", str(policy), "--testset", str(demo),
          "--out", str(out), "--sampling", '{"max_new_tokens": 24}'])  # fmt: skip
    records = tables.read_jsonl(out / "responses.jsonl")
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(records) == 16 and {r["system"] for r in records} == {"base"}
    assert manifest["written"] + manifest["failed"] == 16 and manifest["written"] > 0
    assert len(list(out.glob("*.flac"))) == manifest["written"]
    assert manifest["sampling"]["text_temperature"] == 0.0  # greedy by default
    main(["bench", "run", "--testset", str(demo), "--responses", str(out), "--system", "base",
          "--out", str(tmp_path / "bench")])  # fmt: skip
    scores = tables.read_jsonl(tmp_path / "bench" / "base" / "scores.jsonl")
    assert len(scores) == 16 and sum(r["status"] == "scored" for r in scores) > 0


@pytest.mark.integration
def test_demo_pairs_topline_style_aware_baseline_one_sided(demo_runs):
    built = json.loads((demo_runs[0] / "table.json").read_text())
    base, top = built["pairs"]["baseline"], built["pairs"]["topline"]
    total = {k: {s: sum(p[k] for p in d.values()) for s, d in (("base", base), ("top", top))}
             for k in ("style_aware", "one_sided")}  # fmt: skip
    assert total["style_aware"]["top"] > total["style_aware"]["base"]
    assert total["one_sided"]["base"] > total["one_sided"]["top"]
    assert sum(p["incomplete"] for p in base.values()) == 1  # the dropped response
