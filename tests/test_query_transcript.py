"""The query transcript t_i is a property of the policy (paper §4, eq. 2; issue 13 item 4).

SFT's data decides it, the export records it (``query_transcript`` in ``paras2s_policy.json``)
and every consumer honours it: :func:`load_policy` (preference sampling), ``bench respond
--policy`` and GRPO from ``init_from``. An export without the field loads as trained without
it; an override that contradicts the record is obeyed with a one-line warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import pytest
import torch

import paras2s_pl.models.speech_policy as speech_policy
from paras2s_pl.cli import main
from paras2s_pl.data.prompts import PromptDataModule
from paras2s_pl.data.sft import SFTDataModule
from paras2s_pl.models.speech_policy import load_policy
from paras2s_pl.models.tokenizer import build_mini_tokenizer
from paras2s_pl.modules.grpo import GRPOModule
from paras2s_pl.modules.sft import SFTModule
from paras2s_pl.rl.scorers import TokenFractionScorer
from paras2s_pl.testing import SMALL_POLICY, tiny_meta, tone, write_tiny_policy, write_tiny_set

LOGGER = "paras2s_pl.models.speech_policy"
SAID = "sample number 1 says something"


def transcript_ids(text: str) -> list[int]:
    return list(build_mini_tokenizer()(text, add_special_tokens=False)["input_ids"])


def heard(prompt_text_ids: torch.Tensor, blank: int) -> list[int]:
    """The non-blank ids on a prompt's text stream: only a transcript puts any there."""
    return [i for i in prompt_text_ids.tolist() if i != blank]


def assert_hears(ids: list[int], said: str) -> None:
    expected = transcript_ids(said)
    assert ids and ids == expected[: len(ids)], (ids, expected)


@pytest.fixture
def prompts_seen(monkeypatch) -> list[torch.Tensor]:
    """The text stream of every prompt :class:`Policy` generates from."""
    seen: list[torch.Tensor] = []
    real = speech_policy.generate

    def spy(model, audio_ids, text_ids, *args, **kwargs):
        seen.extend(text_ids.cpu())
        return real(model, audio_ids, text_ids, *args, **kwargs)

    monkeypatch.setattr(speech_policy, "generate", spy)
    return seen


# ---- SFT decides, the export records -------------------------------------------------------
@pytest.mark.parametrize("hears", [True, False])
def test_sft_fit_exports_the_data_setting_and_load_policy_reads_it(tmp_path, hears):
    shards = tmp_path / "shards"
    write_tiny_set(shards, "train", n=2, schema="demo")
    write_tiny_set(shards, "test", n=2, schema="demo")
    data = SFTDataModule(str(shards), batch_size=2, query_transcript=hears)
    module = SFTModule(model_config=SMALL_POLICY, val_generate=0,
                       export_dir=str(tmp_path / "policy"))  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, limit_val_batches=0,
                        enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(module, data)
    info = json.loads((tmp_path / "policy" / "paras2s_policy.json").read_text())
    assert info["query_transcript"] is hears and info["query_transcript_source"] == "shard"
    assert load_policy(tmp_path / "policy").query_transcript is hears


def test_sft_data_and_configs_default_to_the_paper():
    """The paper's policy hears (a_i, t_i): on unless a config says otherwise."""
    import inspect

    import yaml

    assert inspect.signature(SFTDataModule).parameters["query_transcript"].default is True
    repo = Path(__file__).resolve().parents[1]
    for name in ("configs/sft.yaml", "configs/mini/sft.yaml"):
        data = yaml.safe_load((repo / name).read_text())["data"]["init_args"]
        assert data["query_transcript"] is True, name


# ---- load_policy (preference sampling) ----------------------------------------------------
@pytest.mark.parametrize("recorded", [True, False, None])
def test_load_policy_prompt_carries_the_transcript_as_recorded(
    tmp_path, prompts_seen, caplog, recorded
):
    path = write_tiny_policy(tmp_path / "policy", query_transcript=recorded)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        policy = load_policy(path, sampling={"max_new_tokens": 2})
    policy.respond(tone(3.0, 220), 16000, k=1, seed=0, transcript=SAID)
    ids = heard(prompts_seen[0], policy.model.config.text_blank_id)
    if recorded:
        assert_hears(ids, SAID)
    else:
        assert ids == []
    notes = [r for r in caplog.records if "records no query_transcript" in r.getMessage()]
    assert len(notes) == (recorded is None)  # an old export says so, once
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("recorded", [True, False])
def test_a_contradicting_override_is_obeyed_with_one_warning(
    tmp_path, prompts_seen, caplog, recorded
):
    path = write_tiny_policy(tmp_path / "policy", query_transcript=recorded)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        policy = load_policy(path, sampling={"max_new_tokens": 2}, query_transcript=not recorded)
    policy.respond(tone(3.0, 220), 16000, k=1, seed=0, transcript=SAID)
    ids = heard(prompts_seen[0], policy.model.config.text_blank_id)
    assert (ids != []) is (not recorded)
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    message = warning.getMessage()
    assert f"trained with query_transcript={recorded}" in message
    assert f"runs with query_transcript={not recorded}" in message and "\n" not in message
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):  # agreeing is no news
        load_policy(path, query_transcript=recorded)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ---- bench respond --policy -----------------------------------------------------------------
def query_set(root: Path, n: int = 2) -> Path:
    """A labelled test split with 3 s queries, so the transcript fits under the codes."""
    from paras2s_pl.data.shards import ShardSetWriter

    with ShardSetWriter(root, "test", "query", sample_rate=16000) as w:
        for i in range(n):
            w.write(f"s{i:04d}", tiny_meta(i, "query", "test"), tone(3.0, 200 + 30 * i))
    return root


@pytest.mark.parametrize("recorded", [True, False])
def test_bench_respond_honours_the_export(tmp_path, prompts_seen, recorded):
    testset = query_set(tmp_path / "test")
    policy = write_tiny_policy(tmp_path / "sft_policy", query_transcript=recorded)
    out = tmp_path / "responses"
    main(["bench", "respond", "--system", "sft", "--policy", str(policy), "--testset",
          str(testset), "--out", str(out), "--sampling", '{"max_new_tokens": 2}',
          "--query_transcript", "shard"])  # fmt: skip
    blank = load_policy(policy).model.config.text_blank_id
    records = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(prompts_seen) == len(records) == 2
    assert manifest["query_transcript"] is recorded
    for prompt, record, i in zip(prompts_seen, records, range(2), strict=True):
        ids = heard(prompt, blank)
        if recorded:
            assert record["heard"] == tiny_meta(i, "query").content
            assert_hears(ids, record["heard"])
        else:
            assert record["heard"] is None and ids == []


class FakeASR:
    """Hears every query as the same words; counts its calls (private: not in its cache id)."""

    def __init__(self, words: str = "a child says hello") -> None:
        self.words, self._calls = words, 0

    @property
    def calls(self) -> int:
        return self._calls

    def transcribe(self, wavs, sample_rate):
        self._calls += len(wavs)
        return [self.words] * len(wavs)


@pytest.mark.parametrize("recorded", [True, False])
def test_bench_gives_a_transcript_policy_the_asr_transcript(
    tmp_path, prompts_seen, monkeypatch, recorded
):
    from paras2s_pl.bench.policy_responses import build_policy_responses

    monkeypatch.setenv("PARAS2S_CACHE", str(tmp_path / "cache"))
    testset = query_set(tmp_path / "test")
    policy = write_tiny_policy(tmp_path / "sft_policy", query_transcript=recorded)
    asr = FakeASR()
    manifest = build_policy_responses(policy, testset, "test", tmp_path / "out", "sft",
                                      {"max_new_tokens": 2}, asr=asr, progress=False)  # fmt: skip
    blank = load_policy(policy).model.config.text_blank_id
    if recorded:  # the system hears speech only: t_i is what the recogniser heard
        assert asr.calls == 2 and manifest["query_transcript_source"] == "asr"
        for prompt in prompts_seen:
            assert_hears(heard(prompt, blank), asr.words)
        # another system on the same queries: the transcripts come from the cache
        build_policy_responses(policy, testset, "test", tmp_path / "out2", "grpo",
                               {"max_new_tokens": 2}, asr=asr, progress=False)  # fmt: skip
        assert asr.calls == 2 and len(prompts_seen) == 4
        assert_hears(heard(prompts_seen[-1], blank), asr.words)
    else:
        assert asr.calls == 0 and manifest["asr"] is None
        assert all(heard(prompt, blank) == [] for prompt in prompts_seen)


# ---- GRPO from an export ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def dm(tmp_path_factory) -> PromptDataModule:
    root = tmp_path_factory.mktemp("prompts")
    write_tiny_set(root, "rl", n=4, schema="prompt")
    data = PromptDataModule(str(root), "rl", batch_size=2)
    data.setup("fit")
    return data


def grpo_from(policy: Path, dm: PromptDataModule, **overrides) -> GRPOModule:
    """A GRPO module on ``policy`` ready for direct calls (as tests/test_grpo_module.py)."""
    module = GRPOModule(init_from=str(policy), scorer=TokenFractionScorer(), group_size=2,
                        sampling={"max_new_tokens": 2}, log_examples_every_n_rollouts=0,
                        **overrides)  # fmt: skip
    module.tokenizer, module.codec = dm.tokenizer, dm.codec
    module.hparams.text_vocab_size = dm.text_vocab_size
    module.hparams.codec_vocab_size = dm.codec_vocab_size
    module.configure_model()
    module.scorer.setup(torch.device("cpu"))
    return module


def rollout_heard(module: GRPOModule, dm: PromptDataModule) -> list[list[int]]:
    """Per rollout row, the transcript ids on its prompt's text stream."""
    buffer = module.make_rollout(dm.prompts[:2], rollout=0)
    blank = module.model.config.text_blank_id
    prompts = buffer.full_text_ids[:, : buffer.response_start]
    return [heard(row, blank) for row in prompts]


@pytest.mark.parametrize("recorded", [True, False, None])
def test_grpo_from_an_export_feeds_the_transcript_as_recorded_and_exports_it(
    tmp_path, dm, recorded
):
    policy = write_tiny_policy(tmp_path / "sft_policy", query_transcript=recorded)
    module = grpo_from(policy, dm)
    rows = rollout_heard(module, dm)
    for row, prompt in zip(rows, [p for p in dm.prompts[:2] for _ in range(2)], strict=True):
        if recorded:
            assert_hears(row, prompt.content)
        else:
            assert row == []
    module.export_policy(tmp_path / "grpo_policy")
    info = json.loads((tmp_path / "grpo_policy" / "paras2s_policy.json").read_text())
    assert info["query_transcript"] is bool(recorded)
    assert info["query_transcript_source"] == "shard"


def test_grpo_override_against_the_export_warns_and_is_obeyed(tmp_path, dm, caplog):
    policy = write_tiny_policy(tmp_path / "sft_policy", query_transcript=True)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        module = grpo_from(policy, dm, policy_query_transcript=False)
    assert all(row == [] for row in rollout_heard(module, dm))
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "trained with query_transcript=True" in warning.getMessage()
