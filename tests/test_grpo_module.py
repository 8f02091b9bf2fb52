"""GRPO stage: prompt schedule, rollout buffer, the module's rollout and loss, robustness,
toy convergence, exact resume, scorers, missing checkpoints, the mini config and two runs of
the stage in fresh processes giving the same weights.

The loss maths is tested on its own in ``test_grpo_loss.py``. Here the policy is a small
random dual-stream model and the prompts are sine tones (:mod:`paras2s_pl.testing`), so a
rollout takes milliseconds; the toy reward is :class:`TokenFractionScorer` (share of audio
codes in the lower half of the prosody codec's 264), which needs no audio decoding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from paras2s_pl.data.prompts import PromptDataModule, RolloutSchedule
from paras2s_pl.models.dual_stream import DualStreamLM
from paras2s_pl.modules.grpo import GRPOModule
from paras2s_pl.rl.buffer import RolloutBuffer
from paras2s_pl.rl.scorers import JudgeScorer, RewardModelScorer, Scorer, TokenFractionScorer
from paras2s_pl.testing import SMALL_POLICY, write_tiny_policy, write_tiny_set

REPO = Path(__file__).resolve().parents[1]
SMALL = SMALL_POLICY
LOW_CODES = TokenFractionScorer("audio", 0, 132)


@pytest.fixture(scope="module")
def prompts_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prompts")
    write_tiny_set(root, "rl", n=8, schema="prompt")
    write_tiny_set(root, "train", n=8, schema="query")
    return root


@pytest.fixture(scope="module")
def dm(prompts_root) -> PromptDataModule:
    data = PromptDataModule(str(prompts_root), "rl", batch_size=2)
    data.setup("fit")
    return data


def make_module(**overrides) -> GRPOModule:
    args = dict(
        init_from=None,
        model_config=SMALL,
        scorer=LOW_CODES,
        group_size=4,
        sampling={"max_new_tokens": 12},
        log_examples_every_n_rollouts=0,
        export=False,
    )
    args.update(overrides)
    return GRPOModule(**args)


def attached(module: GRPOModule, dm: PromptDataModule) -> GRPOModule:
    """A module ready for direct calls (no Trainer): tokenizer, codec, model, scorer."""
    module.tokenizer, module.codec = dm.tokenizer, dm.codec
    module.hparams.text_vocab_size = dm.text_vocab_size
    module.hparams.codec_vocab_size = dm.codec_vocab_size
    module.configure_model()
    module.scorer.setup(torch.device("cpu"))
    return module


def trainer(tmp_path: Path, max_steps: int, accumulate: int = 2, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        accumulate_grad_batches=accumulate,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=kwargs.pop("enable_checkpointing", False),
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=str(tmp_path),
        **kwargs,
    )


class Constant(Scorer):
    """Every response gets the same reward (NaN where ``nan_rows``)."""

    needs_audio = False

    def __init__(self, value: float = 3.0, nan_rows: tuple[int, ...] = ()):
        self.value, self.nan_rows, self.calls = value, nan_rows, 0

    def __call__(self, prompts, transcripts, responses):
        self.calls += 1
        out = torch.full((len(responses),), self.value)
        out[list(self.nan_rows)] = float("nan")
        return out


# ---- schedule and buffer ------------------------------------------------------------------


def test_schedule_is_a_pure_function_of_the_step(dm):
    sched = RolloutSchedule(dm.prompts, batch_size=2, repeats=3, seed=5, rank=0, world_size=1)
    items = [item for _, item in zip(range(15), sched, strict=False)]
    assert [(i["rollout"], i["phase"]) for i in items[:4]] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert all(i["prompts"] == items[0]["prompts"] for i in items[:3])  # one rollout, 3 steps
    resumed = RolloutSchedule(dm.prompts, 2, repeats=3, seed=5, start=7, rank=0, world_size=1)
    assert next(iter(resumed)) == items[7]
    # one pass (4 rollouts of 2) covers every prompt once; the next pass is a new order
    keys = [p.key for r in range(4) for p in sched.rollout_prompts(r)]
    assert sorted(keys) == sorted(p.key for p in dm.prompts)
    second = [p.key for r in range(4, 8) for p in sched.rollout_prompts(r)]
    assert sorted(second) == sorted(keys) and second != keys


def test_schedule_gives_each_rank_its_own_prompts(dm):
    parts = [
        RolloutSchedule(dm.prompts, 2, rank=r, world_size=2, seed=1).rollout_prompts(3)
        for r in range(2)
    ]
    keys = [{p.key for p in part} for part in parts]
    assert len(keys[0]) == len(keys[1]) == 2 and not keys[0] & keys[1]
    with pytest.raises(ValueError, match="cannot fill one rollout"):
        RolloutSchedule(dm.prompts, 5, rank=0, world_size=2)


def test_prompt_datamodule_keeps_labels_and_counts_skips(prompts_root):
    data = PromptDataModule(str(prompts_root), "train", batch_size=2, max_seconds=0.55)
    data.setup("fit")
    assert data.stats["skipped"]["too_long"] > 0
    assert len(data.prompts) == 8 - data.stats["skipped"]["too_long"]
    first = data.prompts[0]
    assert first.category and first.style and first.codes.numel() > 0
    assert [p.key for p in data.prompts] == sorted(p.key for p in data.prompts)


def test_buffer_micro_batches_split_rows_and_trim_columns():
    n, p, t = 4, 3, 5
    mask = torch.zeros(n, t, dtype=torch.bool)
    mask[0, :2] = mask[1, :1] = mask[2, :4] = mask[3, :3] = True
    full = torch.arange(n * (p + t)).reshape(n, p + t)
    buf = RolloutBuffer(0, p, full, full + 100, torch.ones_like(full), mask, mask.clone(),
                        torch.arange(n).float(), torch.tensor(8.0))  # fmt: skip
    first, second = buf.micro(0, 2), buf.micro(1, 2)
    assert first.audio_mask.shape == (2, 2) and second.audio_mask.shape == (2, 4)
    assert torch.equal(first.full_audio_ids, full[:2, : p + 2])
    assert torch.equal(second.advantages, torch.tensor([2.0, 3.0]))
    state = buf.state_dict()
    assert torch.equal(RolloutBuffer.from_state_dict(state).full_text_ids, buf.full_text_ids)
    with pytest.raises(ValueError, match="equal micro-batches"):
        buf.micro(0, 3)


# ---- the rollout and the loss --------------------------------------------------------------


def test_rollout_then_loss_ratio_one_kl_zero_and_gradients_reach_the_policy_only(dm):
    module = attached(make_module(), dm)
    buffer = module.make_rollout(dm.prompts[:2], rollout=0)
    assert buffer.num_responses == 8 and buffer.ref_audio_logprobs is not None
    assert buffer.old_audio_logprobs is None  # μ = 1: on-policy
    loss, stats = module.micro_batch_loss(buffer)
    # π_θ = π_old = π_ref at the first update: ratio 1, KL 0, loss Σ Â/N' = 0 (centred)
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert stats["kl"] == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    assert stats["entropy/audio"] > 0 and stats["entropy/text"] > 0
    loss.backward()
    grads = [p.grad for p in module.model.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None and not p.requires_grad for p in module.reference.parameters())
    assert set(module.state_dict()) == {f"model.{k}" for k in module.model.state_dict()}
    metrics = module._rollout_log
    assert 0 <= metrics["reward"] <= 1 and metrics["completions/clipped_ratio"] >= 0
    assert {"time/rollout", "time/decode", "time/score", "time/logprobs"} <= set(metrics)


def test_rollout_is_deterministic_per_rollout_index(dm):
    module = attached(make_module(), dm)
    a, b = (module.make_rollout(dm.prompts[:2], rollout=3) for _ in range(2))
    c = module.make_rollout(dm.prompts[:2], rollout=4)
    assert torch.equal(a.full_audio_ids, b.full_audio_ids)
    assert not torch.equal(a.full_audio_ids, c.full_audio_ids)


class _Mixed(Scorer):
    """Rewards 0, 1, 2, … by row, NaN on ``nan_rows``."""

    needs_audio = False

    def __init__(self, nan_rows):
        self.nan_rows = list(nan_rows)

    def __call__(self, prompts, transcripts, responses):
        out = torch.arange(len(responses), dtype=torch.float32)
        out[self.nan_rows] = float("nan")
        return out


def test_nan_rewards_are_dropped_counted_and_never_reach_the_loss(dm):
    # group 1 (rows 0-3) all NaN; group 2 keeps rows 4, 6, 7 (rewards 4, 6, 7)
    module = attached(make_module(scorer=_Mixed(nan_rows=(0, 1, 2, 3, 5))), dm)
    buffer = module.make_rollout(dm.prompts[:2], rollout=0)
    assert module._rollout_log["num_nonfinite_rewards"] == 5
    assert not buffer.audio_mask[[0, 1, 2, 3, 5]].any() and not buffer.text_mask[[0, 5]].any()
    assert buffer.audio_mask[[4, 6, 7]].any() and buffer.advantages[[4, 6, 7]].abs().min() > 0
    loss, _ = module.micro_batch_loss(buffer)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in module.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_all_equal_groups_give_zero_advantage_and_no_policy_gradient(dm):
    module = attached(make_module(), dm)
    module.scorer = Constant(3.0)
    buffer = module.make_rollout(dm.prompts[:2], rollout=0)
    assert module._rollout_log["frac_reward_zero_std"] == 1.0
    assert torch.equal(buffer.advantages, torch.zeros(8))
    loss, _ = module.micro_batch_loss(buffer)
    loss.backward()  # KL is 0 at the reference: no signal at all
    assert all(p.grad is None or p.grad.abs().max() < 1e-6 for p in module.model.parameters())


def test_truncated_responses_are_counted(dm):
    module = attached(make_module(sampling={"max_new_tokens": 3}), dm)
    module.make_rollout(dm.prompts[:2], rollout=0)
    # 3 steps < the audio delay of 6: no response can reach its end token
    assert module._rollout_log["completions/clipped_ratio"] == 1.0


def test_num_iterations_stores_old_logprobs_equal_to_the_policy(dm):
    module = attached(make_module(num_iterations=2), dm)
    buffer = module.make_rollout(dm.prompts[:2], rollout=0)
    assert buffer.old_audio_logprobs is not None
    _, stats = module.micro_batch_loss(buffer)
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-5)


def test_micro_batch_split_gives_the_rollouts_gradient(dm, monkeypatch):
    # Lightning averages the micro-batch losses; with the rollout's denominator their
    # average gradient equals the whole rollout's, for every aggregation
    for aggregation in ("grpo", "dapo", "dr_grpo"):
        module = attached(make_module(scorer=_Mixed(nan_rows=(1,)), aggregation=aggregation), dm)
        buffer = module.make_rollout(dm.prompts[:2], rollout=0)
        with torch.no_grad():  # move off the reference so the KL and clip terms are non-trivial
            for p in module.model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        module.micro_batch_loss(buffer)[0].backward()
        whole = [p.grad.clone() for p in module.model.parameters()]
        module.zero_grad()
        monkeypatch.setattr(GRPOModule, "micro_batches", property(lambda self: 2))
        for i in range(2):
            (module.micro_batch_loss(buffer.micro(i, 2))[0] / 2).backward()
        monkeypatch.undo()
        for a, p in zip(whole, module.model.parameters(), strict=True):
            torch.testing.assert_close(p.grad, a, atol=1e-6, rtol=1e-4)


def test_text_only_mode_masks_the_audio_stream(dm):
    module = attached(make_module(streams="text"), dm)
    buffer = module.make_rollout(dm.prompts[:2], rollout=0)
    assert not buffer.audio_mask.any() and buffer.text_mask.any()


# ---- training with a Trainer -------------------------------------------------------------


@pytest.mark.integration
def test_toy_reward_rises_while_kl_stays_bounded(prompts_root, tmp_path):
    L.seed_everything(0)
    data = PromptDataModule(str(prompts_root), "rl", batch_size=2)
    module = make_module(group_size=8, lr=1e-2, sampling={"max_new_tokens": 16})
    rewards, kls = [], []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch["phase"] == trainer.accumulate_grad_batches - 1:  # runs before the module's
                rewards.append(pl_module._rollout_log["reward"])
                kls.append(max(pl_module._pass_stats["kl"]))

    trainer(tmp_path, 30, gradient_clip_val=1.0, callbacks=[Record()]).fit(module, data)
    assert len(rewards) == 30
    start, end = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    # an untrained policy puts about half its codes below 132 (reward ~0.5); one run of this
    # set-up went 0.46 -> 0.83 with KL <= 0.4. Within-rollout noise of the mean over 5
    # rollouts is ~0.05, so +0.15 is a clear rise that a policy which does not learn misses
    assert end > start + 0.15, (start, end)
    assert max(kls) < 1.0  # β = 0.2 keeps the policy near the reference


def _fit(root, tmp_path, max_steps, ckpt_path=None, every=None):
    L.seed_everything(0)
    data = PromptDataModule(str(root), "rl", batch_size=2)
    module = make_module(num_iterations=2, lr=1e-2)
    callbacks = []
    if every:
        callbacks = [ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=every,
                                     save_top_k=-1, filename="{step}")]  # fmt: skip
    t = trainer(tmp_path, max_steps, callbacks=callbacks, enable_checkpointing=bool(every))
    t.fit(module, data, ckpt_path=ckpt_path)
    return module


@pytest.mark.integration
def test_resume_mid_rollout_and_between_rollouts_is_bit_identical(prompts_root, tmp_path):
    # μ = 2 and 2 micro-batches: 4 training steps and 2 optimizer steps per rollout, so the
    # checkpoint at optimizer step 1 lies inside a rollout (its buffer is saved) and step 2
    # lies between rollouts
    straight = _fit(prompts_root, tmp_path / "a", 4, every=1)
    final = {k: v.clone() for k, v in straight.model.state_dict().items()}
    for step in (1, 2):
        ckpt = tmp_path / "a" / "ckpt" / f"step={step}.ckpt"
        saved = torch.load(ckpt, weights_only=False)
        assert saved["grpo"]["consumed_steps"] == 2 * step
        assert ("buffer" in saved["grpo"]) == (step == 1)
        resumed = _fit(prompts_root, tmp_path / f"b{step}", 4, ckpt_path=str(ckpt))
        for name, value in resumed.model.state_dict().items():
            assert torch.equal(value, final[name]), (step, name)


# ---- scorers --------------------------------------------------------------------------------


def test_missing_policy_or_reward_model_names_the_command(tmp_path):
    module = GRPOModule(init_from=str(tmp_path / "nope"), scorer=LOW_CODES)
    with pytest.raises(FileNotFoundError, match="configs/mini/sft.yaml"):
        module.setup("fit")
    with pytest.raises(FileNotFoundError, match="configs/mini/reward.yaml"):
        RewardModelScorer(str(tmp_path / "nope")).check()


def _tiny_reward_model(path: Path) -> Path:
    from paras2s_pl.models.reward import TokensRewardModel

    TokensRewardModel(config=SMALL).save_pretrained(path)
    return path


def test_reward_model_scorer_is_frozen_and_scores_decoded_audio(dm, tmp_path):
    scorer = RewardModelScorer(str(_tiny_reward_model(tmp_path / "rm")), batch_size=3)
    module = attached(make_module(scorer=scorer, sampling={"max_new_tokens": 14}), dm)
    buffer = module.make_rollout(dm.prompts[:2], rollout=0)
    assert all(not p.requires_grad for p in scorer.model.parameters())
    assert not any(p is q for p in scorer.model.parameters() for q in module.parameters())
    log = module._rollout_log
    decoded = 8 - log["completions/decode_errors"]
    assert log["num_nonfinite_rewards"] == log["completions/decode_errors"]
    if decoded:
        assert 1.0 <= log["reward"] <= 5.0 and log["completions/mean_seconds"] > 0
    loss, _ = module.micro_batch_loss(buffer)
    loss.backward()
    assert all(p.grad is None for p in scorer.model.parameters())


class _RecordingRewardModel:
    """Stands in for a loaded reward model: records each stream's duration as labelled."""

    def __init__(self):
        self.seconds: list[tuple[float, float]] = []

    def score(self, query_wavs, response_wavs, sample_rate, query_texts, response_texts, **kw):
        self.seconds += [
            (len(q) / sample_rate, len(r) / sample_rate)
            for q, r in zip(query_wavs, response_wavs, strict=True)
        ]
        return torch.full((len(query_wavs),), 3.0)


def _tone(seconds: float, rate: int, hz: float = 220.0):
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_reward_model_scorer_labels_24khz_prompts_and_16khz_responses_with_their_rates(tmp_path):
    """Prompts at 24 kHz, responses decoded at 16 kHz: each stream keeps its true duration."""
    from types import SimpleNamespace

    from paras2s_pl.audio.io import resample
    from paras2s_pl.rl.scorers import Response

    prompts = [SimpleNamespace(wav=_tone(1.5, 24000), sample_rate=24000, key="q0")] * 2
    prompts += [SimpleNamespace(wav=_tone(0.8, 24000, 330.0), sample_rate=24000, key="q1")]
    responses = [
        Response("ok", [], torch.zeros(3), True, False, _tone(s, 16000, 180.0), 16000)
        for s in (1.0, 2.0, 0.6)
    ]
    scorer = RewardModelScorer("unused")
    scorer.model = _RecordingRewardModel()
    scorer(prompts, ["a", "a", "b"], responses)
    got = [s for pair in scorer.model.seconds for s in pair]
    assert got == pytest.approx([1.5, 1.0, 1.5, 2.0, 0.8, 0.6], abs=1e-3)

    # a real (tiny) reward model scores as if both streams had been brought to 16 kHz first
    scorer = RewardModelScorer(str(_tiny_reward_model(tmp_path / "rm")))
    scorer.setup(torch.device("cpu"))
    rewards = scorer(prompts, ["a", "a", "b"], responses)
    want = scorer.model.score(
        [resample(p.wav, 24000, 16000) for p in prompts],
        [r.wav for r in responses],
        16000,
        ["a", "a", "b"],
        ["ok"] * 3,
    )
    assert torch.allclose(rewards, want)


def test_judge_scorer_scores_labelled_prompts_and_refuses_unlabelled(prompts_root, dm):
    labelled = PromptDataModule(str(prompts_root), "train", batch_size=2)
    labelled.setup("fit")
    module = attached(make_module(scorer=JudgeScorer("rubric")), labelled)
    module.make_rollout(labelled.prompts[:2], rollout=0)
    log = module._rollout_log
    assert log["num_nonfinite_rewards"] == log["completions/decode_errors"]
    if log["completions/decode_errors"] < 8:
        assert 1.0 <= log["reward"] <= 5.0
        assert any(k.startswith("reward/") for k in log)  # per category
    module.scorer = JudgeScorer("rubric")
    module.scorer.setup(torch.device("cpu"))
    with pytest.raises(ValueError, match="needs labelled prompts"):
        module.make_rollout(dm.prompts[:2], rollout=0)


# ---- configs and the CLI -------------------------------------------------------------------


def _exports(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny 'SFT policy' export and a tiny reward model export, as the stages write them."""
    return write_tiny_policy(tmp_path / "sft_policy"), _tiny_reward_model(tmp_path / "rm")


@pytest.mark.integration
def test_cli_fit_mini_grpo_config(prompts_root, tmp_path):
    from paras2s_pl.cli import main

    policy, reward = _exports(tmp_path)
    cli = main([
        "fit", "--config", str(REPO / "configs/mini/grpo.yaml"),
        "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.callbacks.init_args.dirpath", str(tmp_path / "ckpt"),
        "--data.root", str(prompts_root), "--data.init_args.batch_size", "2",
        "--model.init_args.init_from", str(policy),
        "--model.init_args.scorer.init_args.path", str(reward),
        "--model.init_args.group_size", "2", "--model.init_args.sampling.max_new_tokens", "10",
        "--model.init_args.log_examples_every_n_rollouts", "1",
        "--model.init_args.export_dir", str(tmp_path / "grpo_policy"),
    ])  # fmt: skip
    metrics = cli.trainer.callback_metrics
    for name in ("train/reward", "train/kl", "train/loss", "train/step_time", "train/time/score"):
        assert name in metrics and torch.isfinite(metrics[name]), name
    assert cli.trainer.global_step == 2
    assert (tmp_path / "grpo_policy" / "config.json").exists()
    assert list(Path(cli.trainer.log_dir).glob("events.out.tfevents.*"))
    # the frozen models did not move, the policy did
    from paras2s_pl.models.reward import load_reward_model

    fresh_rm = load_reward_model(reward).state_dict()
    assert all(torch.equal(v, fresh_rm[k]) for k, v in cli.model.scorer.model.state_dict().items())
    start = DualStreamLM.from_pretrained(policy).state_dict()
    assert all(torch.equal(v, start[k]) for k, v in cli.model.reference.state_dict().items())
    assert not all(torch.equal(v, start[k]) for k, v in cli.model.model.state_dict().items())


def _grpo_process(prompts_root: Path, policy: Path, reward: Path, out: Path, hash_seed: int):
    """``paras2s fit`` of the mini GRPO config in a fresh process, as ``paras2s demo`` runs it."""
    args = [
        sys.executable, "-m", "paras2s_pl.cli", "fit",
        "--config", str(REPO / "configs/mini/grpo.yaml"),
        "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(out / "tb"),
        "--trainer.callbacks.init_args.dirpath", str(out / "ckpt"),
        "--data.root", str(prompts_root), "--data.init_args.batch_size", "2",
        "--model.init_args.init_from", str(policy),
        "--model.init_args.scorer.init_args.path", str(reward),
        "--model.init_args.group_size", "2", "--model.init_args.sampling.max_new_tokens", "12",
        "--model.init_args.export_dir", str(out / "grpo_policy"),
    ]  # fmt: skip
    # one torch thread per stage, as the demo runs it; a different hash seed per process
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": str(hash_seed)}
    out.mkdir(parents=True)
    log = open(out / "fit.log", "w")  # noqa: SIM115  (closed by the caller after wait)
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT), log


@pytest.mark.integration
def test_two_grpo_runs_in_fresh_processes_export_identical_weights(prompts_root, tmp_path):
    # the stage exactly as a user reruns it: config (seed_everything 0, 2 encode workers),
    # reward-model scorer on eSpeak-decoded audio, each run its own process and hash seed,
    # both at once (so their timing differs); nothing may depend on time, pid or hash order
    from safetensors.torch import load_file

    policy, reward = _exports(tmp_path)
    runs = [tmp_path / "run1", tmp_path / "run2"]
    procs = [_grpo_process(prompts_root, policy, reward, out, i) for i, out in enumerate(runs)]
    for (proc, log), out in zip(procs, runs, strict=True):
        code = proc.wait(timeout=300)
        log.close()
        assert code == 0, (out / "fit.log").read_text()[-3000:]
    first, second = (load_file(out / "grpo_policy" / "model.safetensors") for out in runs)
    assert first.keys() == second.keys()
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"{len(different)} of {len(first)} tensors differ: {different[:3]}"
    start = load_file(policy / "model.safetensors")
    assert not all(torch.equal(first[k], start[k]) for k in first)  # the runs did train
    logged = [json.loads((out / "grpo_policy/metrics.json").read_text())["metrics"] for out in runs]
    untimed = [{k: v for k, v in m.items() if "time" not in k} for m in logged]
    assert untimed[0] == untimed[1]  # rewards, KL, lengths: the same rollouts


def test_grpo_config_stops_with_the_command_when_checkpoints_are_missing(tmp_path, capsys):
    from paras2s_pl.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([
            "fit", "--config", str(REPO / "configs/grpo.yaml"),
            "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.strategy", "auto", "--trainer.precision", "32-true",
            "--trainer.logger", "false", "--trainer.callbacks", "[]",
            "--data.root", str(tmp_path), "--model.init_args.init_from", str(tmp_path / "sft"),
        ])  # fmt: skip
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "paras2s fit --config configs/sft.yaml" in err and "Traceback" not in err
