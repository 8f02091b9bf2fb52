"""Per-rank GPU memory of the paper-scale stages under FULL_SHARD FSDP, computed from the configs.

Run (CPU only, a few seconds; nothing is allocated, the models are built on the meta device)::

    .venv/bin/python benchmarks/fsdp_memory.py --ranks 1,2,4,8,16

It prints three Markdown tables: the component sizes (parameters counted exactly from the
model classes), the per-rank memory of the *model state* for N ranks (one rank per GPU), and
the per-rank additions that do not shrink with N.

**Precision layout** (what the configs say, not a choice made here):

* ``configs/sft.yaml`` and ``configs/grpo.yaml``: ``trainer.precision: bf16-mixed`` with
  ``model.load_dtype: float32``. The policy's parameters are the fp32 master weights (4 B);
  there is no separate master copy. Gradients are fp32 (4 B, the parameters' dtype; reduced
  in fp32 by FSDP2's ``MixedPrecisionPolicy(reduce_dtype=float32)``). AdamW keeps ``exp_avg``
  and ``exp_avg_sq`` in fp32 (8 B). Total 16 B per policy parameter, all three sharded over N
  (FULL_SHARD = ZeRO-3, FSDP2 ``fully_shard``: ``ModelParallelStrategy``). Compute is bf16:
  under ``bf16-mixed`` ``paras2s_pl.modules.sharding.mixed_precision`` gathers each unit in
  bf16 (``param_dtype=bfloat16``); the fp32 gather of a plain ``MixedPrecisionPolicy()`` is
  printed beside it for comparison.
* GRPO's frozen reference policy: loaded by ``GRPOModule`` from ``init_from`` in
  ``load_dtype`` = float32 (4 B per parameter, no gradients, no optimizer state). Printed two
  ways: sharded like the policy (FSDP2, ``shard_reference: true``, the default) and a full
  replica per rank (``shard_reference: false``).
* GRPO's reward model (``RewardModelScorer``, ``dtype: bfloat16``): Qwen2.5-Omni-7B's thinker
  without the vision tower (``drop_vision: true``) + its LoRA adapters, all bf16 (2 B), frozen,
  a full replica on every rank (the scorer is not a LightningModule child: never sharded).
* Reward-model training (``configs/reward.yaml``: bf16-mixed, ``dtype: bfloat16``): the
  frozen base in bf16 (2 B); the LoRA adapters and the score-row delta in fp32 (PEFT keeps
  adapters fp32) with fp32 gradients and fp32 AdamW moments (16 B). The config names no
  strategy, so N devices means DDP: everything replicated, plus DDP's fp32 gradient buckets
  (4 B per trainable parameter). The FULL_SHARD column shards all of it over N.
* The ASR (``asr_options`` gives no device: Whisper runs on CPU) is not on the GPU. The speech
  codec (GLM-4-Voice tokenizer + Kimi-Audio detokenizer, ``device: cuda``) *is* on every GPU
  but cannot be built offline: **not counted**; measure it once on the GPU.

**Excluded:** activations (they depend on the micro-batch, the sequence length and activation
checkpointing; the two heads' logits over 168,448 ids are the largest), the CUDA context and
the allocator's fragmentation (budget a few GiB), NCCL buffers. The FSDP working set (the
gathered root unit — embeddings, both heads, norms, adaptor — plus two gathered decoder
layers, current and prefetched, with their unsharded gradients) and the generation KV cache
(layers x 2 x kv_heads x head_dim x positions x 2 B, for B x G sequences of prompt + new
positions; trunk and MIMO layers both cache) are printed as per-rank additions.

Sources of the sizes: Kimi-Audio-7B from ``DualStreamConfig.kimi_audio_7b()``; Qwen2.5-Omni-7B
from the values of its official ``config.json`` (``Qwen/Qwen2.5-Omni-7B``,
``thinker_config``), hard-coded in :data:`OMNI_7B_THINKER`; LoRA rank and targets from
``configs/reward.yaml``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

GIB = 2**30
FP32, BF16 = 4, 2

#: Qwen2.5-Omni-7B thinker, from the official config.json of Qwen/Qwen2.5-Omni-7B
#: (``thinker_config``: ``text_config``, ``audio_config``, ``vision_config``). Field names are
#: those of transformers' ``Qwen2_5OmniTextConfig`` / ``Qwen2_5OmniAudioEncoderConfig`` /
#: ``Qwen2_5OmniVisionEncoderConfig``. ``tie_word_embeddings: false``: the 7B thinker ships its
#: own ``lm_head`` (as Qwen2.5-7B); a tied head would be 0.545B parameters fewer.
OMNI_7B_THINKER: dict[str, dict] = {
    "text_config": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32768,
        "rope_theta": 1_000_000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
    },
    "audio_config": {  # Whisper-large-v3-like encoder
        "d_model": 1280,
        "encoder_layers": 32,
        "encoder_attention_heads": 20,
        "encoder_ffn_dim": 5120,
        "num_mel_bins": 128,
        "max_source_positions": 1500,
        "n_window": 100,
        "output_dim": 3584,
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "out_hidden_size": 3584,
        "fullatt_block_indexes": [7, 15, 23, 31],
    },
}

#: configs/reward.yaml: LoRA rank and target projections (inside the text decoder's layers).
LORA_R = 16
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SCORE_ROWS = 5  # the trainable fp32 delta on the lm_head rows of "1".."5"
#: Gathered decoder layers at once in the FSDP working set (current + prefetched).
GATHERED_LAYERS = 2


@dataclass(frozen=True)
class ModelCount:
    """Parameters of one model: total, per decoder layer (largest), and outside the layers."""

    total: int
    layers: int  # all decoder layers together
    n_layers: int
    layer_max: int  # the largest single decoder layer

    @property
    def root(self) -> int:
        """Parameters outside the decoder layers (FSDP's root unit)."""
        return self.total - self.layers


@dataclass(frozen=True)
class Part:
    """One block of per-rank memory: ``params`` x ``bytes_per_param``, divided by N if sharded."""

    name: str
    params: int
    bytes_per_param: int
    sharded: bool

    def gib(self, ranks: int) -> float:
        """GiB on each of ``ranks`` ranks."""
        return self.params * self.bytes_per_param / (ranks if self.sharded else 1) / GIB


def _count(model: torch.nn.Module, layer_class_names: Sequence[str], skip: str = "") -> ModelCount:
    def keep(name: str) -> bool:
        return not (skip and name.startswith(skip))

    total = sum(p.numel() for n, p in model.named_parameters() if keep(n))
    sizes = [
        sum(p.numel() for p in m.parameters())
        for n, m in model.named_modules()
        if type(m).__name__ in layer_class_names and keep(n + ".")
    ]
    return ModelCount(total, sum(sizes), len(sizes), max(sizes))


@lru_cache(maxsize=1)
def policy_count() -> ModelCount:
    """The Kimi-Audio-7B dual-stream policy, built on the meta device."""
    from paras2s_pl.models.dual_stream import DualStreamConfig, DualStreamLM

    with torch.device("meta"):
        model = DualStreamLM(DualStreamConfig.kimi_audio_7b())
    return _count(model, ("Qwen2DecoderLayer",))


def omni_thinker(config: dict[str, dict] | None = None) -> torch.nn.Module:
    """Qwen2.5-Omni thinker on the meta device (default: the 7B's published config)."""
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    cfg = Qwen2_5OmniThinkerConfig(**(config or OMNI_7B_THINKER))
    with torch.device("meta"):
        return Qwen2_5OmniThinkerForConditionalGeneration(cfg)


def lora_params(model: torch.nn.Module, rank: int, targets: Sequence[str]) -> int:
    """LoRA A (r x in) + B (out x r) on every matched Linear, with PEFT's regex of the repo."""
    from paras2s_pl.models.reward_omni import lora_regex

    pattern = re.compile(lora_regex(targets))
    return sum(
        rank * (m.in_features + m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and pattern.fullmatch(n)
    )


@dataclass(frozen=True)
class RewardCount:
    """The reward model's parts: thinker without vision, the vision tower, trainable parts."""

    base: ModelCount  # without the vision tower (drop_vision: true)
    vision: int
    lora: int
    score_rows: int
    hidden: int

    @property
    def trainable(self) -> int:
        """LoRA adapters + the score-row delta."""
        return self.lora + self.score_rows


@lru_cache(maxsize=1)
def reward_count() -> RewardCount:
    """The Qwen2.5-Omni-7B thinker reward model, built on the meta device."""
    model = omni_thinker()
    vision = sum(p.numel() for p in model.model.visual.parameters())
    base = _count(
        model,
        ("Qwen2_5OmniDecoderLayer", "Qwen2_5OmniAudioEncoderLayer"),
        skip="model.visual.",
    )
    hidden = model.config.text_config.hidden_size
    return RewardCount(base, vision, lora_params(model, LORA_R, LORA_TARGETS), SCORE_ROWS * hidden,
                       hidden)  # fmt: skip


def trainable_parts(label: str, params: int, sharded: bool) -> list[Part]:
    """fp32 parameters, fp32 gradients, AdamW's two fp32 moments."""
    return [
        Part(f"{label} params (fp32)", params, FP32, sharded),
        Part(f"{label} grads (fp32)", params, FP32, sharded),
        Part(f"{label} AdamW exp_avg + exp_avg_sq (fp32)", params, 2 * FP32, sharded),
    ]


def scenarios() -> dict[str, list[Part]]:
    """Column name -> the parts of per-rank model state (see the module docstring)."""
    p, r = policy_count(), reward_count()
    policy = trainable_parts("policy", p.total, sharded=True)
    scorer = Part("reward model, frozen (bf16, replica)", r.base.total + r.lora, BF16, False)
    ref = "reference policy, frozen (fp32)"
    rm_base = "reward thinker base, frozen (bf16)"
    return {
        "SFT": policy,
        "GRPO, ref sharded": [*policy, Part(ref, p.total, FP32, True), scorer],
        "GRPO, ref replicated": [*policy, Part(ref, p.total, FP32, False), scorer],
        "RM train, DDP": [
            Part(rm_base, r.base.total, BF16, False),
            *trainable_parts("LoRA + score rows", r.trainable, sharded=False),
            Part("DDP gradient buckets (fp32)", r.trainable, FP32, False),
        ],
        "RM train, FULL_SHARD": [
            Part(rm_base, r.base.total, BF16, True),
            *trainable_parts("LoRA + score rows", r.trainable, sharded=True),
        ],
    }


def per_rank_gib(parts: Sequence[Part], ranks: int) -> float:
    """Per-rank GiB of ``parts`` on ``ranks`` ranks."""
    return sum(part.gib(ranks) for part in parts)


def working_set_gib(count: ModelCount, bytes_per_param: int, with_grads: bool) -> float:
    """FSDP's gathered root unit + :data:`GATHERED_LAYERS` layers (and their full gradients)."""
    gathered = count.root + GATHERED_LAYERS * count.layer_max
    return gathered * bytes_per_param * (2 if with_grads else 1) / GIB


def kv_cache_gib(sequences: int, positions: int, bytes_per_value: int = BF16) -> float:
    """Generation KV cache of the policy: every trunk and MIMO layer caches K and V."""
    from paras2s_pl.models.dual_stream import DualStreamConfig

    cfg = DualStreamConfig.kimi_audio_7b()
    layers = cfg.num_hidden_layers + cfg.mimo_layers
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    per_position = layers * 2 * cfg.num_key_value_heads * head_dim * bytes_per_value
    return per_position * positions * sequences / GIB


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], right: int = 1) -> list[str]:
    align = ["---"] * right + ["--:"] * (len(header) - right)
    return [_row(header), _row(align), *(_row(r) for r in rows)]


def component_table() -> list[str]:
    """Component sizes: parameters (B) and GiB at fp32 / bf16."""
    p, r = policy_count(), reward_count()
    rows = [
        ("policy, Kimi-Audio-7B dual stream (trainable)", p.total),
        (f"of which {p.n_layers} decoder layers (28 trunk + 6 MIMO)", p.layers),
        ("of which root unit (embedding, 2 heads, norms, adaptor)", p.root),
        ("reference policy (frozen copy of the policy)", p.total),
        ("reward thinker, Qwen2.5-Omni-7B, vision dropped", r.base.total),
        (f"of which {r.base.n_layers} decoder + audio-encoder layers", r.base.layers),
        ("of which root unit (embedding, lm_head, norms, audio convs)", r.base.root),
        ("not loaded: vision tower (drop_vision)", r.vision),
        (f"LoRA r={LORA_R} on {len(LORA_TARGETS)} projections x 28 layers", r.lora),
        (f"score-row delta ({SCORE_ROWS} x {r.hidden})", r.score_rows),
    ]
    return _table(
        ("component", "params", "params (B)", "GiB fp32", "GiB bf16"),
        [(name, f"{n:,}", f"{n / 1e9:.3f}", f"{n * FP32 / GIB:.2f}", f"{n * BF16 / GIB:.2f}")
         for name, n in rows],
    )  # fmt: skip


def rank_table(ranks: Sequence[int]) -> list[str]:
    """Per-rank GiB of the model state for each N."""
    cols = scenarios()
    rows = [(n, *(f"{per_rank_gib(parts, n):.1f}" for parts in cols.values())) for n in ranks]
    return _table(("N ranks", *cols), rows)


def additions_table(sequences: int, prompt: int, new: int) -> list[str]:
    """Per-rank GiB that do not shrink with N."""
    p, r = policy_count(), reward_count()
    positions = prompt + new
    rows = [
        ("policy FSDP working set (SFT, GRPO), bf16 gather (bf16-mixed, the configs)",
         working_set_gib(p, BF16, with_grads=True)),
        ("policy FSDP working set (SFT, GRPO), fp32 gather (precision 32-true)",
         working_set_gib(p, FP32, with_grads=True)),
        ("reference FSDP working set when sharded (bf16 gather, no grads)",
         working_set_gib(p, BF16, with_grads=False)),
        ("reward thinker FSDP working set (RM train FULL_SHARD, bf16, no base grads)",
         working_set_gib(r.base, BF16, with_grads=False)),
        (f"GRPO generation KV cache: {sequences} sequences x {positions} positions "
         f"({prompt} prompt + {new} new), bf16", kv_cache_gib(sequences, positions)),
    ]  # fmt: skip
    return _table(("per-rank addition (not / N; activations excluded)", "GiB"),
                  [(name, f"{gib:.2f}") for name, gib in rows])  # fmt: skip


def report(ranks: Sequence[int], batch: int, group: int, prompt: int, new: int) -> str:
    """The three tables as Markdown."""
    lines = ["### Components", "", *component_table(), ""]
    lines += ["### Per-rank model state (GiB): params + grads + AdamW + frozen models", ""]
    lines += [*rank_table(ranks), ""]
    lines += ["### Per-rank additions (GiB)", "", *additions_table(batch * group, prompt, new)]
    return "\n".join(lines)


def parse_ranks(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (positive integers)."""
    ranks = [int(x) for x in text.split(",") if x.strip()]
    if not ranks or min(ranks) < 1:
        raise argparse.ArgumentTypeError(f"--ranks wants positive integers, got {text!r}")
    return ranks


def main(argv: Sequence[str] | None = None) -> None:
    """Print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=parse_ranks, default=[1, 2, 4, 8, 16],
                    help="comma-separated rank counts (GPUs), e.g. 1,2,4,8")  # fmt: skip
    ap.add_argument("--batch", type=int, default=4, help="GRPO prompts per rank (data.batch_size)")
    ap.add_argument("--group", type=int, default=8, help="GRPO responses per prompt (G)")
    ap.add_argument("--prompt-len", type=int, default=400, help="prompt positions")
    ap.add_argument("--new-tokens", type=int, default=256,
                    help="generated positions (configs/grpo.yaml: max_new_tokens 375)")  # fmt: skip
    args = ap.parse_args(argv)
    print(report(args.ranks, args.batch, args.group, args.prompt_len, args.new_tokens))


if __name__ == "__main__":
    main()
