"""GRPO optimizer-step cost: the mini config's phase split, and text-only GRPO beside TRL.

Run (``pip install -e .[bench]`` for the TRL part; without TRL that part is skipped)::

    python benchmarks/grpo_step.py             # 1 warm-up + 3 timed optimizer steps per run
    python benchmarks/grpo_step.py --steps 2 --skip-trl

1. **Mini GRPO step** (``configs/mini/grpo.yaml``: B x G = 4 x 8, 2 micro-batches of 16,
   β 0.2, ``max_new_tokens`` 200, CPU) through a Lightning Trainer: mean seconds per
   optimizer step in each phase the module logs (``train/time/*``, ``train/step_time``) and
   the wall-clock time between optimizer steps. Policy: ``--policy`` (the SFT export), else a
   random tiny policy; reward: ``--reward-model``, else ``TokenFractionScorer`` (audio codes
   < 132: no audio decoding, so ``decode`` is only detokenization). The header says which.
2. **Text-only vs TRL**: the same policy with ``streams="text"`` (it still samples both
   streams; only the text tokens carry the loss) and a text-token reward (fraction of ids <
   V/2), beside TRL's ``GRPOTrainer`` on a random ``Qwen2ForCausalLM`` with the policy trunk's
   hidden size, layers, heads and text vocabulary (no MIMO audio layers, no audio head), on
   the transcripts of the same prompts, with the same B, G, completion length, temperature 1,
   β, ε, ``loss_type="grpo"``, lr and 2 micro-batches per generation. Both are wall-clock
   seconds per optimizer step; mean completion lengths are shown because they set the cost.

Measured (2 CPU cores, one torch thread, busy box; ``--steps 2``; the trained mini SFT policy,
no reward-model export yet, so TokenFractionScorer), seconds per optimizer step::

    | run                | rollout | decode | score | logprobs | update | total | wall | length |
    | both streams       |    2.20 |   0.01 |  0.00 |     0.58 |   1.68 |  4.46 | 4.47 |  100.8 |
    | streams=text       |    2.24 |   0.01 |  0.00 |     0.37 |   1.13 |  3.75 | 3.77 |   99.4 |

    | run                                   | s/step | length | ms/token | reward |
    | ours, streams=text (128h x 4L + MIMO) |   3.77 |   99.4 |     1.19 |  0.335 |
    | TRL GRPOTrainer (Qwen2 128h x 4L)     |   2.99 |  169.0 |     0.55 |  0.511 |
    ours / TRL = 1.26x per step (1.12x-1.42x over three runs on the shared box), about 2.2x
    per completion token: the SFT policy stops at ~100 positions, the random Qwen2 runs ~169
    tokens (``length`` = mean positions / tokens per completion)
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from transformers.utils import logging as hf_logging

from paras2s_pl.data.prompts import PromptDataModule
from paras2s_pl.models.reward import CONFIG_FILE
from paras2s_pl.modules.grpo import GRPOModule
from paras2s_pl.rl.scorers import RewardModelScorer, Scorer, TokenFractionScorer

PHASES = ("rollout", "decode", "score", "logprobs", "update")
MICRO_BATCHES = 2  # trainer.accumulate_grad_batches of the mini config
BETA, CLIP_EPS, LR = 0.2, 0.2, 1e-4


class LightningClock(L.Callback):
    """Wall-clock time at the end of each optimizer step (the last micro-batch of a pass)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.ends = [time.perf_counter()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (int(batch["phase"]) + 1) % trainer.accumulate_grad_batches == 0:
            self.ends.append(time.perf_counter())


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def fit_ours(
    args: argparse.Namespace, data: PromptDataModule, scorer: Scorer, streams: str
) -> tuple[dict[str, float], Any]:
    """Fit 1 + ``args.steps`` optimizer steps: mean metrics of the timed steps, policy config."""
    L.seed_everything(0, verbose=False)
    module = GRPOModule(
        init_from=args.policy_dir, scorer=scorer, group_size=args.group, beta=BETA,
        clip_eps=CLIP_EPS, streams=streams, sampling={"max_new_tokens": args.max_new_tokens},
        lr=LR, log_examples_every_n_rollouts=0, export=False,
    )  # fmt: skip
    clock = LightningClock()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="cpu", devices=1, precision="32-true", max_steps=1 + args.steps,
            accumulate_grad_batches=MICRO_BATCHES, gradient_clip_val=1.0, limit_val_batches=0,
            logger=CSVLogger(tmp, name="grpo"), callbacks=[clock], log_every_n_steps=1,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            default_root_dir=tmp,
        )  # fmt: skip
        trainer.fit(module, data)
        with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
            rows = [r for r in csv.DictReader(f) if r.get("train/step_time")]
    rows = rows[1:]  # drop the warm-up step
    out = {p: mean([float(r[f"train/time/{p}"]) for r in rows]) for p in PHASES}
    out["total"] = mean([float(r["train/step_time"]) for r in rows])
    out["length"] = mean([float(r["train/completions/mean_length"]) for r in rows])
    out["reward"] = mean([float(r["train/reward"]) for r in rows])
    out["wall"] = mean([b - a for a, b in zip(clock.ends[1:], clock.ends[2:], strict=False)])
    return out, module.model.config


def fit_trl(
    args: argparse.Namespace, cfg: Any, tokenizer: Any, texts: list[str], high: int
) -> dict[str, float] | None:
    """TRL's GRPOTrainer on an equivalent random text model; None when TRL is missing."""
    try:
        from datasets import Dataset
        from transformers import PrinterCallback, Qwen2Config, Qwen2ForCausalLM, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as err:
        print(f"\nTRL part skipped ({err}): pip install -e .[bench]")
        return None

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.logs: list[dict[str, float]] = []

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.ends = [time.perf_counter()]

        def on_step_end(self, *a: Any, **k: Any) -> None:
            self.ends.append(time.perf_counter())

        def on_log(self, *a: Any, logs: dict[str, float] | None = None, **k: Any) -> None:
            self.logs.append(dict(logs or {}))

    def reward(completion_ids: list[list[int]], **_: Any) -> list[float]:
        return [mean([float(i < high) for i in ids]) if ids else 0.0 for ids in completion_ids]

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=cfg.text_vocab_size, hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads,
            max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.rms_norm_eps,
            tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        )
    )  # fmt: skip
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(f"{tmp}/model")
        tokenizer.save_pretrained(f"{tmp}/model")
        config = GRPOConfig(
            output_dir=f"{tmp}/out", use_cpu=True, use_vllm=False, report_to=[], seed=0,
            per_device_train_batch_size=args.batch * args.group // MICRO_BATCHES,
            gradient_accumulation_steps=MICRO_BATCHES, steps_per_generation=MICRO_BATCHES,
            num_generations=args.group, max_completion_length=args.max_new_tokens,
            temperature=1.0, top_k=0, top_p=1.0, beta=BETA, epsilon=CLIP_EPS, loss_type="grpo",
            scale_rewards="group", learning_rate=LR, max_grad_norm=1.0, max_steps=1 + args.steps,
            logging_steps=1, save_strategy="no", gradient_checkpointing=False, bf16=False,
            dataloader_num_workers=0, disable_tqdm=True,
        )  # fmt: skip
        trainer = GRPOTrainer(
            model=f"{tmp}/model", reward_funcs=reward, args=config, callbacks=[clock],
            train_dataset=Dataset.from_dict({"prompt": texts}), processing_class=tokenizer,
        )  # fmt: skip
        trainer.remove_callback(PrinterCallback)  # it prints every log dict
        trainer.train()
    logs = [g for g in clock.logs if "completions/mean_length" in g][1:]
    return {
        "wall": mean([b - a for a, b in zip(clock.ends[1:], clock.ends[2:], strict=False)]),
        "length": mean([g["completions/mean_length"] for g in logs]),
        "reward": mean([g["reward"] for g in logs if "reward" in g]),
    }


def phase_table(title: str, runs: dict[str, dict[str, float]]) -> None:
    print(title)
    cols = (*PHASES, "total", "wall")
    header = f"| {'run':<28} | " + " | ".join(f"{c:>8}" for c in cols) + f" | {'length':>6} |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for name, m in runs.items():
        cells = " | ".join(f"{m[c]:>8.2f}" for c in cols)
        print(f"| {name:<28} | {cells} | {m['length']:>6.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="shards/demo", help="prompt shards (split rl)")
    ap.add_argument("--policy", default="runs/mini/sft_policy")
    ap.add_argument("--reward-model", default="runs/mini/reward_model")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps (after 1 warm-up)")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--batch", type=int, default=4, help="B prompts per optimizer step")
    ap.add_argument("--group", type=int, default=8, help="G responses per prompt")
    ap.add_argument("--limit", type=int, default=64, help="rl prompts to read (0: all)")
    ap.add_argument("--skip-trl", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)  # spinning OpenMP threads crawl on a shared, busy CPU
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for name in ("lightning", "lightning.pytorch", "paras2s_pl"):
        logging.getLogger(name).setLevel(logging.ERROR)

    has_policy = (Path(args.policy) / "config.json").exists()
    has_reward = (Path(args.reward_model) / CONFIG_FILE).exists()
    args.policy_dir = args.policy if has_policy else None
    data = PromptDataModule(
        args.root, "rl", batch_size=args.batch, limit=args.limit or None, seed=0
    )
    t0 = time.perf_counter()
    data.setup("fit")
    print(f"read + encoded {len(data.prompts)} prompts in {time.perf_counter() - t0:.1f}s")
    policy = args.policy if has_policy else "random tiny policy (no --policy export)"
    reward = (
        RewardModelScorer(args.reward_model, batch_size=32)
        if has_reward
        else TokenFractionScorer("audio", 0, 132)
    )
    where = args.reward_model if has_reward else "TokenFractionScorer(audio < 132; no RM export)"
    mini, _ = fit_ours(args, data, reward, "both")
    phase_table(
        f"\nmini GRPO step, s per optimizer step (mean of {args.steps} after 1 warm-up), "
        f"B x G = {args.batch} x {args.group}, {MICRO_BATCHES} micro-batches, "
        f"max_new_tokens {args.max_new_tokens}, cpu, {torch.get_num_threads()} thread\n"
        f"policy: {policy}; reward: {where}",
        {"ours, both streams": mini},
    )

    tokenizer = data.tokenizer  # the policy's own, once GRPOModule.setup has run
    high = len(tokenizer) // 2
    text, cfg = fit_ours(args, data, TokenFractionScorer("text", 0, high), "text")
    title = f"\ntext-only GRPO (same policy), reward = fraction of text ids < {high}"
    phase_table(title, {"ours, streams=text": text})
    texts = [p.content for p in data.prompts]
    trl = None if args.skip_trl else fit_trl(args, cfg, tokenizer, texts, high)
    if trl is None:
        return
    print(
        f"\n| {'run':<40} | {'s/step':>7} | {'length':>6} | {'ms/token':>8} | {'reward':>6} |\n"
        f"|{'-' * 42}|{'-' * 9}|{'-' * 8}|{'-' * 10}|{'-' * 8}|"
    )
    trunk = f"{cfg.hidden_size}h x {cfg.num_hidden_layers}L"
    for name, m in (
        (f"ours, streams=text ({trunk} + MIMO)", text),
        (f"TRL GRPOTrainer (Qwen2 {trunk}, text)", trl),
    ):
        per_token = 1e3 * m["wall"] / (args.batch * args.group * m["length"])
        print(
            f"| {name:<40} | {m['wall']:>7.2f} | {m['length']:>6.1f} | {per_token:>8.2f} "
            f"| {m['reward']:>6.3f} |"
        )
    print(f"ours / TRL = {text['wall'] / trl['wall']:.2f}x (wall-clock s per optimizer step)")


if __name__ == "__main__":
    main()
