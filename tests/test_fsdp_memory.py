"""benchmarks/fsdp_memory.py: exact parameter counts, 1/N sharding, and the printed table.

The counts are checked against hand-written formulas of a Qwen2-style decoder (tolerance: 0
parameters: the formulas are exact), so a change of the model classes or the configs that
moves the README's memory table fails here. Run ``pytest tests/test_fsdp_memory.py``.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import yaml

from paras2s_pl.models.dual_stream import DualStreamConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fsdp_memory.py"


@pytest.fixture(scope="module")
def fm():
    """The script, imported as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("fsdp_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def qwen2_layer(h: int, inter: int, heads: int, kv_heads: int) -> int:
    """One Qwen2 decoder layer: q/k/v with bias, o without, SwiGLU MLP, two RMSNorms."""
    kv = kv_heads * (h // heads)
    attention = (h * h + h) + 2 * (h * kv + kv) + h * h
    return attention + 3 * h * inter + 2 * h


def test_policy_count_matches_the_qwen2_formula(fm):
    c = DualStreamConfig.kimi_audio_7b()
    h, v = c.hidden_size, c.vocab_size
    layer = qwen2_layer(h, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads)
    layers = (c.num_hidden_layers + c.mimo_layers) * layer
    embedding, heads, norms = v * h, 2 * v * h, 2 * h  # text + audio heads; norm + mimo_norm
    adaptor = (c.adaptor_input_dim * h + h) + (h * h + h) + 2 * h  # Linear, Linear, LayerNorm
    expected = embedding + layers + norms + heads + adaptor
    count = fm.policy_count()
    assert count.n_layers == 34 and count.layer_max == layer
    assert count.layers == layers
    assert count.total == expected  # tolerance 0: the formula is exact
    assert 9.7e9 < count.total < 9.8e9  # the README's "9.77B"


def test_reward_lora_settings_are_the_configs(fm):
    config = yaml.safe_load((SCRIPT.parents[1] / "configs" / "reward.yaml").read_text())
    omni = config["model"]["init_args"]["model"]["init_args"]
    assert fm.LORA_R == omni["lora_r"]
    assert list(fm.LORA_TARGETS) == omni["target_modules"]


def test_reward_lora_count_matches_the_formula(fm):
    r, h, inter, kv = 16, 3584, 18944, 4 * (3584 // 28)  # configs/reward.yaml: lora_r 16
    per_layer = r * (2 * (h + h) + 2 * (h + kv) + 3 * (h + inter))  # q,o; k,v; gate,up,down
    count = fm.reward_count()
    assert count.lora == 28 * per_layer
    text_layer = qwen2_layer(h, inter, 28, 4)
    assert count.base.layer_max == text_layer  # the text layers are the largest units


def test_sharded_parts_scale_as_one_over_n(fm):
    columns = fm.scenarios()
    assert all(p.sharded for p in columns["SFT"])
    assert not any(p.sharded for p in columns["RM train, DDP"])
    for parts in columns.values():
        for part in parts:
            one, eight = part.gib(1), part.gib(8)
            assert one > 0
            assert eight == pytest.approx(one / 8 if part.sharded else one, rel=1e-12)
    sft = columns["SFT"]
    assert fm.per_rank_gib(sft, 8) == pytest.approx(fm.per_rank_gib(sft, 1) / 8, rel=1e-12)
    # 16 B per policy parameter (fp32 params + grads + two AdamW moments), all sharded
    total = fm.policy_count().total
    assert fm.per_rank_gib(sft, 1) == pytest.approx(16 * total / 2**30, rel=1e-12)
    # GRPO with a replicated reference: only the policy part shrinks with N
    grpo = columns["GRPO, ref replicated"]
    fixed = sum(p.gib(1) for p in grpo if not p.sharded)
    assert fm.per_rank_gib(grpo, 4) - fixed == pytest.approx((fm.per_rank_gib(grpo, 1) - fixed) / 4)


def test_kv_cache_formula(fm):
    sequences, positions = 32, 656
    expected = 34 * 2 * 4 * 128 * 2 * positions * sequences  # layers x K,V x kv x dim x bf16
    assert fm.kv_cache_gib(sequences, positions) * 2**30 == pytest.approx(expected, rel=1e-12)


def test_main_prints_a_row_per_rank_count(fm, capsys):
    fm.main(["--ranks", "1,3,8,16"])
    out = capsys.readouterr().out
    section = out.split("### Per-rank model state")[1].split("###")[0]
    rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(r.split("|")[1]) for r in rows] == [1, 3, 8, 16]
    header = next(line for line in section.splitlines() if line.startswith("| N ranks"))
    names = [c.strip() for c in header.strip("|").split("|")][1:]
    assert names == list(fm.scenarios())
    sft = float(rows[2].split("|")[2])  # N = 8, SFT column
    assert sft == pytest.approx(fm.per_rank_gib(fm.scenarios()["SFT"], 8), abs=0.05)
    assert "KV cache" in out and "Components" in out
