"""Training on 2 ranks without a GPU: gloo on CPU, DDP and FSDP2 (issue 15).

Each run is ``paras2s fit`` of a mini config in its own process tree, as a user starts it,
with ``trainer.devices 2`` (Lightning launches the second rank). ``tests/mp_probe.py``
records what every rank consumed. Checked: ranks read disjoint samples of equal count
(one shard for 2 ranks, and with DataLoader workers), the weights after a 2-rank run equal a
1-rank run with the same global batch (:data:`WEIGHT_ATOL`), DDP and FSDP2 agree, GRPO groups
live on one rank and each rank scores only its own responses, a sharded checkpoint resumes
exactly, and the export of a sharded run loads on one process. A hang fails by timeout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from paras2s_pl.testing import write_tiny_policy, write_tiny_set

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

#: Largest |difference| of any weight between a 2-rank run and the 1-rank run with the same
#: global batch (float32; the ranks sum gradients in another order). The runs move weights by
#: ~1e-2 in 4 steps, so a wrongly split or wrongly normalised batch shows far above this.
WEIGHT_ATOL = 2e-5

STRATEGIES = {
    "ddp": ["--trainer.strategy", "ddp"],
    # Lightning's default mesh (1 node x 2 devices); the modules shard over all its ranks
    "fsdp2": [
        "--trainer.strategy",
        json.dumps({"class_path": "paras2s_pl.modules.sharding.FSDP2Strategy"}),
    ],
}  # fmt: skip

SMALL_REWARD = json.dumps(
    {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "mimo_layers": 1,
     "mimo_transformer_from_layer_index": 1, "num_attention_heads": 2, "num_key_value_heads": 1}
)  # fmt: skip
SMALL_POLICY = SMALL_REWARD


def fit(
    stage: str, out: Path, devices: int, strategy: str | None, *extra: str, code: int = 0
) -> Path:
    """Run ``paras2s fit --config configs/mini/<stage>.yaml`` in a fresh process; its probe dir.

    ``code``: the exit status it must end with.
    """
    args = [
        sys.executable, "-m", "paras2s_pl.cli", "fit",
        "--config", str(REPO / f"configs/mini/{stage}.yaml"),
        "--trainer.devices", str(devices),
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(out / "tb"),
        *(STRATEGIES[strategy] if strategy else []),
        *extra,
        "--trainer.callbacks+", "mp_probe.RecordBatches",  # last: the options above are the
    ]  # fmt: skip                                        # config's ModelCheckpoint's
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
        "PARAS2S_PROBE_DIR": str(out / "probe"),
    }
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "fit.log", "w") as log:
        got = subprocess.run(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300, check=False
        ).returncode
    assert got == code, (out / "fit.log").read_text()[-4000:]
    return out / "probe"


def records(probe: Path, what: str) -> dict[int, list[dict]]:
    """Rank -> its recorded rows of ``what``."""
    found = {}
    for path in sorted(probe.glob(f"{what}.rank*.jsonl")):
        rank = int(path.suffixes[-2].removeprefix(".rank"))
        found[rank] = [json.loads(line) for line in path.read_text().splitlines()]
    return found


def assert_disjoint_equal(probe: Path) -> dict[int, list[list[str]]]:
    """Both ranks ran the same steps on disjoint batches of equal size; rank -> step keys."""
    rows = records(probe, "batches")
    assert sorted(rows) == [0, 1], f"ranks that trained: {sorted(rows)}"
    steps = {r: [row["keys"] for row in rows[r]] for r in rows}
    assert len(steps[0]) == len(steps[1]) > 0
    for a, b in zip(steps[0], steps[1], strict=True):
        assert len(a) == len(b) > 0, (a, b)
        assert not set(a) & set(b), f"both ranks got {set(a) & set(b)}"
    return steps


def assert_global_batches_as_one_rank(probe: Path, one_rank_probe: Path) -> None:
    """Disjoint equal rank batches that together are the 1-rank run's batch of each step."""
    steps = assert_disjoint_equal(probe)
    one = [row["keys"] for row in records(one_rank_probe, "batches")[0]]
    together = [sorted(a + b) for a, b in zip(steps[0], steps[1], strict=True)]
    assert together == [sorted(keys) for keys in one]


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# ---- SFT -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """16 train samples in one shard (for two ranks) whose replies differ in length.

    Unequal token counts per rank are what a per-rank mean loss gets wrong.
    """
    from dataclasses import replace

    from paras2s_pl.data.shards import ShardSetWriter
    from paras2s_pl.testing import tiny_meta, tone

    root = tmp_path_factory.mktemp("demo")
    with ShardSetWriter(root, "train", "demo", maxcount=100) as w:
        for i in range(16):
            words = " ".join(["more"] * (1 + 5 * (i % 4)))
            meta = replace(tiny_meta(i, "demo"), response_text=f"reply to {i} {words}")
            w.write(f"s{i:04d}", meta, tone(0.5, 200 + 20 * i), tone(0.2 + 0.3 * (i % 4), 300))
    write_tiny_set(root, "test", n=4, schema="demo")
    return root


def sft(root: Path, out: Path, devices: int, strategy: str | None, *extra: str) -> Path:
    batch = str(4 // devices)  # global batch 4
    return fit(
        "sft", out, devices, strategy,
        "--data.root", str(root), "--data.init_args.batch_size", batch,
        "--data.init_args.shuffle", "false", "--data.init_args.encode_workers", "0",
        "--data.init_args.val_limit", "4", "--model.init_args.val_generate", "1",
        "--model.init_args.sampling.max_new_tokens", "6",
        "--model.init_args.model_config", SMALL_POLICY,
        "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.callbacks.init_args.dirpath", str(out / "ckpt"),
        "--model.init_args.export_dir", str(out / "policy"),
        *extra,
    )  # fmt: skip


def one_rank_run(tmp_path_factory, run, root: Path, name: str) -> Path:
    """The 1-rank run of ``run`` (a stage helper above) that 2-rank runs are compared with."""
    out = tmp_path_factory.mktemp(name)
    run(root, out, 1, None)
    return out


@pytest.fixture(scope="module")
def sft_one_rank(demo_root, tmp_path_factory) -> Path:
    return one_rank_run(tmp_path_factory, sft, demo_root, "sft1")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_sft_on_two_ranks_equals_one_rank(strategy, demo_root, sft_one_rank, tmp_path):
    workers = ["--data.init_args.num_workers", "1"] if strategy == "ddp" else []
    assert_global_batches_as_one_rank(
        sft(demo_root, tmp_path, 2, strategy, *workers), sft_one_rank / "probe"
    )
    got = weights(tmp_path / "policy" / "model.safetensors")
    want = weights(sft_one_rank / "policy" / "model.safetensors")
    assert max_difference(got, want) < WEIGHT_ATOL
    log = (tmp_path / "fit.log").read_text()
    assert "sync_dist=True" not in log  # every epoch-level metric is reduced over ranks
    if strategy == "fsdp2":
        assert "decoder-layer units" in log  # it really sharded
        assert list((tmp_path / "ckpt").glob("last.ckpt/*.distcp"))  # per-rank checkpoint


# ---- reward model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prefs")
    write_tiny_set(root, "train", n=32, schema="preference")
    return root


def reward(
    root: Path, out: Path, devices: int, strategy: str | None, *extra: str, code: int = 0
) -> Path:
    return fit(
        "reward", out, devices, strategy,
        "--data.root", str(root), "--data.init_args.batch_size", str(8 // devices),
        "--data.init_args.shuffle", "false", "--data.init_args.encode_workers", "0",
        "--data.init_args.val_fraction", "0.25",
        "--model.init_args.model.init_args.config", SMALL_REWARD,
        "--model.init_args.bootstrap_resamples", "20",
        "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.callbacks.init_args.dirpath", str(out / "ckpt"),
        "--model.init_args.export_dir", str(out / "rm"),
        *extra,
        code=code,
    )  # fmt: skip


@pytest.fixture(scope="module")
def reward_one_rank(prefs_root, tmp_path_factory) -> Path:
    return one_rank_run(tmp_path_factory, reward, prefs_root, "rm1")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_reward_on_two_ranks_equals_one_rank(strategy, prefs_root, reward_one_rank, tmp_path):
    from paras2s_pl.models.reward import load_reward_model

    assert_global_batches_as_one_rank(
        reward(prefs_root, tmp_path, 2, strategy), reward_one_rank / "probe"
    )
    got = load_reward_model(tmp_path / "rm").state_dict()
    want = load_reward_model(reward_one_rank / "rm").state_dict()
    assert max_difference(got, want) < WEIGHT_ATOL
    # the exported report is the same held-out set, gathered from both ranks
    report = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    one_report = json.loads((reward_one_rank / "rm" / "metrics.json").read_text())
    assert report["exported"]["step"] == one_report["exported"]["step"]
    assert report["heldout"]["overall"]["pairs"] == one_report["heldout"]["overall"]["pairs"]


def test_streaming_reward_data_splits_one_shard_over_ranks_and_workers(prefs_root, tmp_path):
    # 1 shard, 2 ranks x 2 workers: every reader keeps every 4th sample, none twice
    probe = reward(
        prefs_root, tmp_path, 2, "ddp",
        "--data.init_args.in_memory", "false", "--data.init_args.num_workers", "2",
        "--trainer.limit_val_batches", "0", "--model.init_args.export", "false",
    )  # fmt: skip
    steps = assert_disjoint_equal(probe)
    seen = [k for rank in steps.values() for batch in rank for k in batch]
    assert len(seen) == 4 * 2 * 4  # 4 steps x 2 ranks x batch 4


def test_streamed_held_out_pairs_on_fsdp2_ranks_stop_at_start_up(prefs_root, tmp_path):
    # unequal held-out batches per rank would leave one rank waiting in a gather forever
    reward(prefs_root, tmp_path, 2, "fsdp2", "--data.init_args.in_memory", "false", code=2)
    last = (tmp_path / "fit.log").read_text().strip().splitlines()[-1]
    assert "in_memory=false with held-out pairs on several FSDP2 ranks" in last


# ---- GRPO ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grpo_inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("grpo")
    write_tiny_set(root / "prompts", "rl", n=8, schema="prompt")
    return root / "prompts", write_tiny_policy(root / "sft_policy")


def grpo(inputs, out: Path, strategy: str | None, steps: int, *extra: str) -> Path:
    """4 prompts x G = 2 per rollout over 1 rank (``strategy`` None) or 2."""
    prompts, policy = inputs
    devices = 1 if strategy is None else 2
    return fit(
        "grpo", out, devices, strategy,
        "--data.root", str(prompts), "--data.init_args.global_batch_size", "4",
        "--data.init_args.encode_workers", "0",
        "--model.init_args.init_from", str(policy),
        "--model.init_args.scorer", "mp_probe.RecordingScorer",
        "--model.init_args.group_size", "2", "--model.init_args.sampling.max_new_tokens", "8",
        "--trainer.max_steps", str(steps),
        "--trainer.callbacks.init_args.dirpath", str(out / "ckpt"),
        "--trainer.callbacks.init_args.every_n_train_steps", "2",
        "--model.init_args.export_dir", str(out / "policy"),
        *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def grpo_ddp(grpo_inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grpo_ddp")
    grpo(grpo_inputs, out, "ddp", 4)
    return out


@pytest.fixture(scope="module")
def grpo_fsdp2(grpo_inputs, tmp_path_factory) -> Path:
    """4 FSDP2 steps, a sharded checkpoint every 2, progress lines on."""
    out = tmp_path_factory.mktemp("grpo_fsdp2")
    grpo(grpo_inputs, out, "fsdp2", 4, "--trainer.enable_progress_bar", "true")
    return out


@pytest.fixture(scope="module")
def grpo_one_rank(grpo_inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grpo1")
    grpo(grpo_inputs, out, None, 4)
    return out


def test_grpo_on_two_ranks_equals_one_rank(grpo_ddp, grpo_one_rank):
    # each response is seeded by its prompt's slot in the rollout: the same samples, so the
    # same weights, however many ranks share the rollout
    assert_global_batches_as_one_rank(grpo_ddp / "probe", grpo_one_rank / "probe")
    one = weights(grpo_one_rank / "policy" / "model.safetensors")
    two = weights(grpo_ddp / "policy" / "model.safetensors")
    assert max_difference(one, two) < WEIGHT_ATOL


def test_grpo_groups_stay_on_their_rank_and_ddp_equals_fsdp2(grpo_inputs, grpo_ddp, grpo_fsdp2):
    tmp_path = grpo_fsdp2
    probe = tmp_path / "probe"
    steps = assert_disjoint_equal(probe)
    # each micro-batch step of a rollout holds that rank's prompts; ranks never share one
    scored = records(probe, "scored")
    for rank in (0, 1):
        for call, prompts in zip(scored[rank], steps[rank][::2], strict=False):
            keys = call["keys"]  # B x G rows: each prompt G = 2 times, in a row
            assert keys[0::2] == keys[1::2] == prompts
    for a, b in zip(scored[0], scored[1], strict=True):
        assert not set(a["keys"]) & set(b["keys"])
    for rank in (0, 1):  # the sharded frozen reference never reaches the optimizer
        (start,) = records(probe, "start")[rank]
        assert start["reference_sharded"] and not start["reference_in_optimizer"]
        assert start["optimizer_tensors"] == start["policy_tensors"]
    ddp_weights = weights(grpo_ddp / "policy" / "model.safetensors")
    fsdp_weights = weights(tmp_path / "policy" / "model.safetensors")
    from paras2s_pl.models.dual_stream import DualStreamLM

    DualStreamLM.from_pretrained(tmp_path / "policy")  # the gathered export loads on 1 process
    log = (tmp_path / "fit.log").read_text()
    assert "in eval mode at the start of training" not in log  # init_from loads in eval mode
    assert log.count("step 4/4 (100%)") == 1  # progress lines from rank 0 only
    start = weights(grpo_inputs[1] / "model.safetensors")
    # it trained: 4 steps move weights by ~1e-3 (60x the tolerance), so "equal within
    # WEIGHT_ATOL" below compares runs that moved, not two copies of the start
    assert max_difference(ddp_weights, start) > 10 * WEIGHT_ATOL
    assert max_difference(fsdp_weights, ddp_weights) < WEIGHT_ATOL


def test_grpo_fsdp2_resumes_from_a_sharded_checkpoint_exactly(grpo_inputs, grpo_fsdp2, tmp_path):
    # the 4-step run's checkpoint at step 2, resumed to step 4, ends where that run ended
    (ckpt,) = (grpo_fsdp2 / "ckpt").glob("grpo-step=2*")
    assert ckpt.is_dir() and list(ckpt.glob("*.distcp"))  # one file per rank
    grpo(grpo_inputs, tmp_path / "resumed", "fsdp2", 4, "--ckpt_path", str(ckpt))
    resumed = weights(tmp_path / "resumed" / "policy" / "model.safetensors")
    uninterrupted = weights(grpo_fsdp2 / "policy" / "model.safetensors")
    assert max_difference(resumed, uninterrupted) < WEIGHT_ATOL
    steps = records(tmp_path / "resumed" / "probe", "batches")
    assert [row["step"] for row in steps[0]] == [2, 2, 3, 3]  # 2 micro-batches a step


# ---- generation under sharding -------------------------------------------------------------

MAX_NEW = 12


def _generate_rank(rank: int, world: int, init_file: str, out: str) -> None:
    """One rank: a sharded policy whose rank 0 ends at once and rank 1 never (forced logits)."""
    from torch.distributed.device_mesh import init_device_mesh

    from paras2s_pl.models.dual_stream import DualStreamConfig, DualStreamLM
    from paras2s_pl.models.layout import build_prompt, collate
    from paras2s_pl.models.sampling import SamplingConfig, all_ranks_done, generate
    from paras2s_pl.modules.sharding import shard_layers
    from paras2s_pl.testing import SMALL_POLICY as SMALL

    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(0)
        cfg = DualStreamConfig.tiny(512, 264, **SMALL)
        model = DualStreamLM(cfg).eval()
        shard_layers(model, init_device_mesh("cpu", (world,)))
        stops = list(cfg.audio_stop_ids)
        calls = []

        def force(module, args, output):  # rank 0: a stop code; rank 1: never one
            calls.append(1)
            logits = output.audio_logits.clone()
            if rank == 0:
                logits[..., stops[0]] = 1e4
            else:
                logits[..., stops] = -float("inf")
            return dataclasses.replace(output, audio_logits=logits)

        model.register_forward_hook(force)
        prompts = [build_prompt(torch.randint(0, 264, (8,)), cfg) for _ in range(2)]
        batch = collate(prompts, cfg.text_blank_id, left_pad=True)
        sampling = SamplingConfig(max_new_tokens=MAX_NEW, audio_temperature=1.0)
        with torch.no_grad():
            result = generate(
                model, batch["audio_ids"], batch["text_ids"], batch["attention_mask"],
                sampling, torch.Generator().manual_seed(rank), all_done=all_ranks_done,
            )  # fmt: skip
        Path(out, f"rank{rank}.json").write_text(
            json.dumps(
                {
                    "calls": len(calls),
                    "finished": result.finished.tolist(),
                    "lengths": result.lengths.tolist(),
                }
            )
        )
    finally:
        torch.distributed.destroy_process_group()


def test_sharded_generation_keeps_finished_ranks_stepping_until_all_are_done(tmp_path):
    # each step of a sharded forward gathers weights from both ranks: had rank 0 stopped
    # after its stop code, rank 1's next step would wait forever (the timeout fails it)
    import torch.multiprocessing as mp

    mp.spawn(_generate_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(ranks[0]["finished"]) and ranks[0]["lengths"][0] < MAX_NEW  # ended early
    assert not any(ranks[1]["finished"]) and ranks[1]["lengths"] == [MAX_NEW] * 2
    assert ranks[0]["calls"] == ranks[1]["calls"] == MAX_NEW  # stepped together to the end
