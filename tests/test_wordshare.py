"""Word and generic shares of a bench run (paras2s_pl.bench.wordshare)."""

from __future__ import annotations

import json

import pytest

from paras2s_pl.bench import wordshare
from paras2s_pl.bench.rubric import rubric_score


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# (key, style, the policy's text, the ASR transcript of its audio)
ROWS = [
    ("a", "sad", "I'm so sorry, that sounds hard.", "i'm so sorry that sounds hard"),
    ("b", "happy", "Sion shks saown que dind.", "sign shakes so on"),
    ("c", "child", "Ask a parent first, okay?", "ask a parent first"),
    ("d", "angry", "The blade blos a map.", "the blade blows a map"),
]


@pytest.fixture
def run_dir(tmp_path):
    """A bench system directory as ``paras2s bench run`` writes it, with its responses."""
    responses = tmp_path / "responses" / "sft"
    responses.mkdir(parents=True)
    write_jsonl(responses / "responses.jsonl", [{"key": k, "text": t} for k, _, t, _ in ROWS])
    run = tmp_path / "bench" / "sft"
    run.mkdir(parents=True)
    scores = []
    for key, style, _, transcript in ROWS:
        score, reason = rubric_score(style, transcript, "neutral (female voice)")
        scores.append({"key": key, "style": style, "transcript": transcript, "score": score,
                       "reason": reason, "status": "scored"})  # fmt: skip
    scores.append({"key": "e", "style": "sad", "transcript": None, "status": "missing"})
    write_jsonl(run / "scores.jsonl", scores)
    (run / "summary.json").write_text(json.dumps({"responses": {"path": str(responses)}}))
    return run


def test_shares_worked_by_hand(run_dir):
    vocab = wordshare.mini_world_words()
    assert {"sorry", "i'm", "parent", "blade"} <= vocab and not {"sion", "shks", "blos"} & vocab
    shares = wordshare.run_shares(run_dir)
    assert shares["n"] == 4  # the missing response is not counted
    # text words: 6 + 0 (of 5) + 5 + 4 (of 5: "blos" is no word) = 15 of 21
    assert shares["text_words"] == pytest.approx(15 / 21)
    assert shares["text_words"] < 0.8 and shares["asr_words"] > shares["text_words"]
    # heard: a 6/6, b 0/5, c 4/5 ("okay" unsaid), d 4/5 ("blos" is not "blows"): 14 of 21
    assert shares["heard"] == pytest.approx(14 / 21)
    assert shares["words"] == pytest.approx(sum(len(t.split()) for *_, t in ROWS) / 4)


def test_generic_share_is_the_rubric_verdict(run_dir):
    rows = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    judged = [r for r in rows if r["status"] == "scored"]
    by_reason = sum("content generic" in r["reason"] for r in judged) / len(judged)
    shares = wordshare.run_shares(run_dir)
    assert shares["generic"] == by_reason == 0.5  # b and d carry no cue; a and c do
    assert shares["generic_text"] == 0.5


def test_without_responses_the_text_shares_are_none_and_the_line_says_so(run_dir, capsys):
    (run_dir / "summary.json").write_text("{}")
    shares = wordshare.run_shares(run_dir)
    assert shares["text_words"] is None and shares["heard"] is None and shares["generic"] == 0.5
    line = wordshare.format_shares("sft", shares)
    assert line.startswith("sft ") and "text –" in line and "ASR 50 %" in line
    wordshare.main([str(run_dir), "--json"])
    assert json.loads(capsys.readouterr().out)["generic"] == 0.5
