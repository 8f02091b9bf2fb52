"""Careless command lines end in one line naming the option or file and the fix, exit 2.

Each case was a traceback (exit 1) or a silent success (exit 0) before: `bench respond` of a
missing test set wrote "0 responses", `build-demo --shard_size 0` wrote one shard per
sample, `fit` before its shards existed raised ``TypeError: length unknown without a
manifest``, and `configs/grpo.yaml` on a machine without a GPU ended in Lightning's
traceback. A run that scores nothing exits 1 and says so.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from judge_server import JudgeServer, ServerError

from paras2s_pl.bench.cache import CachedJudge
from paras2s_pl.bench.judges import Judgement
from paras2s_pl.cli import main
from paras2s_pl.errors import UsageError
from paras2s_pl.testing import write_tiny_policy, write_tiny_set

REPO = Path(__file__).resolve().parents[1]
SFT = str(REPO / "configs/mini/sft.yaml")
REWARD = str(REPO / "configs/mini/reward.yaml")
GRPO = str(REPO / "configs/mini/grpo.yaml")


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A labelled test split, a prompt-only split, a broken and a shard-less manifest."""
    write_tiny_set(tmp_path / "set", "test", n=4)
    write_tiny_set(tmp_path / "set", "rl", n=4, schema="prompt")
    write_tiny_policy(tmp_path / "policy")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "test.manifest.json").write_text("{not json")
    (tmp_path / "noshards").mkdir()
    (tmp_path / "noshards" / "test.manifest.json").write_text(json.dumps({"count": 3}))
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "test.manifest.json").write_text(
        json.dumps({"count": 3, "shards": [{"file": "test-000000.tar"}]})
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return tmp_path


CASES = {
    "respond: missing test set": (
        "bench respond --testset nope --system topline --out r", "no shard set at nope"),
    "respond: unknown system": (
        "bench respond --testset set --system foo --out r", "--system 'foo' is no reference"),
    "respond: policy without --policy": (
        "bench respond --testset set --system policy --out r", "needs --policy DIR"),
    "respond: path as system": (
        "bench respond --testset set --system ../evil --out r", "--system '../evil'"),
    "respond: prompt-only split": (
        "bench respond --testset set --split rl --system topline --out r", "schema 'prompt'"),
    "respond: invalid manifest": (
        "bench respond --testset bad --system topline --out r", "not a valid manifest"),
    "respond: shard-less manifest": (
        "bench respond --testset noshards --system topline --out r", "field 'shards'"),
    "respond: listed shard gone": (
        "bench respond --testset gone --system topline --out r", "missing (first:"),
    "run: missing test set": (
        "bench run --testset nope --responses set --out b", "no shard set at nope"),
    "run: negative concurrency": (
        "bench run --testset set --responses set --out b --judge openai --judge_base_url "
        "http://127.0.0.1:9/v1 --judge_options '{\"max_concurrency\":-1}'", "max_concurrency"),
    "run: openai judge without key or URL": (
        "bench run --testset set --responses set --out b --judge openai",
        "set the environment variable OPENAI_API_KEY"),
    "build-demo: negative contents": (
        "shards build-demo --out s --contents_per_category -3", "--contents_per_category -3"),
    "build-demo: zero contents": (
        "shards build-demo --out s --contents_per_category 0", "--contents_per_category 0"),
    "build-demo: fraction above 1": (
        "shards build-demo --out s --test_fraction 2", "--test_fraction 2"),
    "build-demo: empty shards": ("shards build-demo --out s --shard_size 0", "--shard_size 0"),
    "build-demo: negative rate": (
        "shards build-demo --out s --sample_rate -16000", "--sample_rate -16000"),
    "curate: k 0": (
        "curate preferences --policy nope --queries set --split test --k 0 --out p", "--k 0"),
    "curate: negative budget": (
        "curate preferences --policy nope --queries set --split test --num_queries -5 --out p",
        "--num_queries -5"),
    "curate: unknown transcript": (
        "curate preferences --policy nope --queries set --split test --transcript banana "
        "--out p", "--transcript 'banana'"),
    "demo: unknown profile": ("demo --profile huge --out d", "--profile 'huge'"),
    "fit: missing data root": (
        f"fit --config {SFT} --data.init_args.root nope --trainer.max_steps 1",
        "make it with `paras2s shards build-demo --out nope`"),
    "fit: SFT before its shards": (
        f"fit --config {SFT} --trainer.max_steps 1", "paras2s shards build-demo --out shards/demo"),
    "fit: reward before its preferences": (
        f"fit --config {REWARD} --trainer.max_steps 1", "paras2s curate preferences"),
    "fit: negative max_steps": (
        f"fit --config {SFT} --data.init_args.root set --trainer.max_steps -7", "You passed in -7"),
    "fit: batch size 0": (
        f"fit --config {SFT} --data.init_args.root set --data.init_args.train_split test "
        "--data.init_args.batch_size 0 --trainer.max_steps 1", "batch_size=0"),
    "fit: global batch that does not split": (
        f"fit --config {SFT} --data.init_args.root set --data.init_args.train_split test "
        "--data.init_args.global_batch_size 5 --trainer.accumulate_grad_batches 2 "
        "--trainer.max_steps 1", "global_batch_size=5 examples does not split over 1 device(s) "
        "x 2 accumulation steps; give a multiple of 2"),
    "fit: GRPO global batch of no prompts": (
        f"fit --config {GRPO} --data.init_args.root set --data.init_args.global_batch_size 0 "
        "--model.init_args.init_from policy --model.init_args.scorer "
        "paras2s_pl.rl.scorers.TokenFractionScorer --trainer.max_steps 1",
        "global_batch_size=0 prompts"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_careless_command_line_is_one_line_and_exit_2(case, world, capsys):
    argv, expected = CASES[case]
    if argv.startswith("fit "):  # its own process: Lightning's console handler outlives capsys
        done = subprocess.run([sys.executable, "-m", "paras2s_pl.cli", *shlex.split(argv)],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        code, err = done.returncode, done.stderr
    else:
        with pytest.raises(SystemExit) as exit_:
            main(shlex.split(argv))
        code, err = exit_.value.code, capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"paras2s {argv.split()[0]}") and ": error: " in last, last
    assert expected in last, last
    assert not (world / "r").exists() or not any((world / "r").iterdir())  # nothing half-made


def test_the_gpu_config_on_a_machine_without_one_says_what_to_run(world):
    done = subprocess.run([sys.executable, "-m", "paras2s_pl.cli", "fit", "--config",
                           str(REPO / "configs/grpo.yaml")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})  # fmt: skip
    err = done.stderr
    assert done.returncode == 2 and "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "configs/mini/<stage>.yaml" in last and "--trainer.accelerator cpu" in last, last


def test_a_judge_that_scores_nothing_exits_1_in_one_line(world, capsys):
    """A judge whose every call fails wrote a table of 0 scored queries and exited 0."""
    with JudgeServer() as server:
        server.script("", *[ServerError()] * 1000)  # every prompt, every try
        with pytest.raises(SystemExit) as exit_:
            main(["bench", "run", "--testset", "set", "--responses", "set", "--out", "b",
                  "--judge", "openai", "--judge_base_url", server.url,
                  "--judge_options", '{"max_retries": 0, "backoff_base": 0.01}'])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in err
    assert "no query of 4 was scored" in err.strip().splitlines()[-1]


def test_a_corrupt_judge_cache_names_the_file_and_the_fix(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "judgements.sqlite").write_bytes(b"not a database " * 100)

    class Judge:
        name = "j"

        def score(self, items, on_result=None):
            return [Judgement(score=3) for _ in items]

    with pytest.raises(UsageError, match=r"judgements.sqlite is unreadable .* move it away"):
        CachedJudge(Judge(), cache)
    assert (cache / "judgements.sqlite").read_bytes().startswith(b"not a database")  # kept


def test_inspect_reads_a_hand_made_manifest_without_summary_fields(tmp_path, capsys):
    """It raised KeyError('hours') on a manifest listing only its shards."""
    write_tiny_set(tmp_path, "train", n=3)
    path = tmp_path / "train.manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({"shards": manifest["shards"], "count": 3}))
    main(["shards", "inspect", str(tmp_path), "--split", "train"])
    out = capsys.readouterr().out
    assert '"count": 3' in out and '"yielded": 3' in out
