"""Reward model: score tokens, loss, both backends, data, module, curation, budgets, configs.

Unit tests run in seconds on tiny models; ``integration`` ones fit the tiny tokens model on a
synthetic TTS preference set (held-out Pearson r >= 0.7) and run ``paras2s curate
preferences`` end to end on a tiny demo set with a random policy, then rerun it.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
import webdataset as wds

from paras2s_pl.audio.tts import EspeakTTS
from paras2s_pl.bench.judges import Judgement
from paras2s_pl.bench.rubric import RubricJudge
from paras2s_pl.curate.budget import PoolEntry, read_exclude, select_queries, subset
from paras2s_pl.data.preferences import (
    BATCH_KEYS,
    PreferenceDataModule,
    heldout_groups,
    is_heldout,
    query_group,
)
from paras2s_pl.data.schema import PreferenceMeta
from paras2s_pl.data.shards import ShardDataset, ShardSetWriter, read_manifest
from paras2s_pl.losses.reward import expected_score, score_token_loss
from paras2s_pl.models.dual_stream import DualStreamConfig, DualStreamLM
from paras2s_pl.models.reward import (
    SCORE_CHARS,
    ScoreTokenError,
    TokensRewardModel,
    load_reward_model,
    reward_layout,
    score_token_ids,
)
from paras2s_pl.models.tokenizer import build_mini_tokenizer
from paras2s_pl.modules.reward import RewardModule
from paras2s_pl.modules.reward_report import heldout_report
from paras2s_pl.testing import tone, write_tiny_set

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL = dict(
    hidden_size=64, intermediate_size=192, num_hidden_layers=2, mimo_transformer_from_layer_index=1
)


@pytest.fixture(scope="module")
def tokens_model() -> TokensRewardModel:
    torch.manual_seed(0)
    return TokensRewardModel(config=SMALL)


# ---- score tokens and the loss -----------------------------------------------------------


def test_score_chars_are_five_distinct_single_tokens():
    tok = build_mini_tokenizer()
    ids = score_token_ids(tok)
    assert len(ids) == len(set(ids)) == 5
    assert [tok.decode([i]) for i in ids] == list(SCORE_CHARS)


def test_tokenizer_without_single_token_digits_fails_naming_them():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "1": 1, "2": 2, "4": 3, "5": 4, "33": 5}  # no "3"
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")
    with pytest.raises(ScoreTokenError, match=r"'3' -> ids \[0\] \(tokens \['\[UNK\]'\]\)"):
        score_token_ids(tok)
    core2 = Tokenizer(models.WordLevel({"[UNK]": 0, "x": 1}, unk_token="[UNK]"))
    tok2 = PreTrainedTokenizerFast(tokenizer_object=core2, unk_token="[UNK]")
    with pytest.raises(ScoreTokenError, match=r"'1' -> .*'5' -> ids \[0\]"):  # all [UNK]
        score_token_ids(tok2)


def test_score_token_loss_hand_computed():
    """Row 1: zero logits, score 3 -> CE = ln 5, E[s] = 3, argmax = "1" (wrong).
    Row 2: logit ln 4 on "1", score 1 -> p1 = 4/8 = 0.5, CE = ln 2,
    E[s] = 0.5*1 + 0.125*(2+3+4+5) = 2.25, argmax right. Mean CE = (ln 5 + ln 2)/2,
    accuracy 0.5, MAE = (0 + 1.25)/2 = 0.625.
    """
    logits = torch.tensor([[0.0] * 5, [math.log(4), 0, 0, 0, 0]], requires_grad=True)
    loss, stats = score_token_loss(logits, torch.tensor([3, 1]))
    assert loss.item() == pytest.approx((math.log(5) + math.log(2)) / 2, abs=1e-6)
    assert expected_score(logits).tolist() == pytest.approx([3.0, 2.25])
    assert stats["accuracy"].item() == 0.5 and stats["mae"].item() == pytest.approx(0.625)
    loss.backward()  # CE target right: d loss / d logit = (p - onehot)/B, negative only at target
    grad = logits.grad
    assert grad[0, 2] < 0 and (grad[0, [0, 1, 3, 4]] > 0).all()
    assert grad[1, 0] < 0 and (grad[1, 1:] > 0).all()
    assert grad[0].tolist() == pytest.approx([0.1, 0.1, -0.4, 0.1, 0.1])  # (0.2 - 1[k=3]) / 2


def test_label_smoothing_and_bad_scores():
    """Uniform logits: CE is ln 5 with or without smoothing; a perfect logit pays for it."""
    zeros = torch.zeros(1, 5)
    assert score_token_loss(zeros, torch.tensor([4]), 0.1)[0].item() == pytest.approx(math.log(5))
    sharp = torch.tensor([[0.0, 0, 0, 50.0, 0]])
    assert score_token_loss(sharp, torch.tensor([4]))[0].item() < 1e-6
    assert score_token_loss(sharp, torch.tensor([4]), 0.1)[0].item() > 1.0  # 0.08 * 50
    for bad in ([0], [6]):
        with pytest.raises(ValueError, match="1..5"):
            score_token_loss(zeros, torch.tensor(bad))
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        score_token_loss(torch.zeros(2, 4), torch.tensor([1, 2]))


# ---- tokens backend -------------------------------------------------------------------------


def test_reward_layout_hand_checked():
    cfg = DualStreamConfig.tiny()
    audio, text, cut = reward_layout(
        torch.tensor([1, 2]), torch.tensor([3]), cfg, [100], [200, 201]
    )
    o = cfg.audio_offset
    assert audio.tolist() == [2, 4, o + 1, o + 2, 5, 8, 6, 3, o + 3, 0, 6]
    assert text.tolist() == [0, 0, 100, 0, 0, 0, 0, 0, 200, 201, 1]
    assert not cut
    audio, text, cut = reward_layout(torch.arange(50), torch.arange(50), cfg, max_len=47)
    assert cut and len(audio) == len(text) == 47


def test_tokens_score_api_batched_no_grad_and_save_load(tmp_path, tokens_model):
    q, r = tone(1.0, 180), tone(0.8, 260)
    rm = tokens_model
    rm.train()
    scores = rm.score([q, r, q], [r, q, q], 16000, ["hi there", None, "x"], ["ok", "b", None])
    assert scores.shape == (3,) and not scores.requires_grad
    assert ((scores >= 1) & (scores <= 5)).all() and rm.training  # mode restored
    assert rm.score_argmax([q], [r], 16000).dtype == torch.long
    assert rm.score([], [], 16000).shape == (0,)
    with pytest.raises(ValueError, match="response wavs"):
        rm.score([q], [], 16000)
    with torch.no_grad():  # move off the initial point so a broken load would show
        for p in rm.lm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = rm.score_logits([q, r], [r, q], 16000, ["a b", None], ["c", "d"])
    rm.save_pretrained(tmp_path / "rm")
    loaded = load_reward_model(tmp_path / "rm")
    after = loaded.score_logits([q, r], [r, q], 16000, ["a b", None], ["c", "d"])
    torch.testing.assert_close(before, after)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    cfg = json.loads((tmp_path / "rm" / "reward_config.json").read_text())
    assert cfg["backend"] == "tokens" and cfg["score_chars"] == list(SCORE_CHARS)


def test_tokens_model_from_policy_export_and_frozen_audio_head(tmp_path):
    tok = build_mini_tokenizer()
    policy = DualStreamLM(DualStreamConfig.tiny(len(tok), 264, **SMALL))
    policy.save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    rm = TokensRewardModel(init_from=str(tmp_path / "policy"))
    torch.testing.assert_close(rm.lm.lm_head.weight, policy.lm_head.weight)
    assert not any(p.requires_grad for p in rm.lm.mimo_layers.parameters())
    assert all(p.requires_grad for p in rm.lm.layers.parameters())


# ---- omni backend (tiny random thinker) ----------------------------------------------------


@pytest.fixture(scope="module")
def omni_parts(tmp_path_factory):
    """A tiny random Qwen2.5-Omni thinker config and a BPE tokenizer with its special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from paras2s_pl.bench.prompt import load_guideline
    from paras2s_pl.models.reward_omni import SPECIAL

    specials = list(SPECIAL.values())
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator([load_guideline().template] * 3, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<|im_end|>", additional_special_tokens=specials
    )
    path = tmp_path_factory.mktemp("omni_tok")
    tok.save_pretrained(path)
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in SPECIAL.items()}
    config = dict(
        audio_config=dict(
            num_mel_bins=128,
            encoder_layers=1,
            encoder_attention_heads=2,
            encoder_ffn_dim=32,
            d_model=16,
            output_dim=32,
            n_window=50,
        ),
        vision_config=dict(
            depth=1,
            hidden_size=16,
            intermediate_size=32,
            num_heads=2,
            out_hidden_size=32,
            fullatt_block_indexes=[0],
        ),
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [1, 1, 2]},
        ),
        audio_token_index=ids["audio"],
        audio_start_token_id=ids["audio_bos"],
        audio_end_token_id=ids["audio_eos"],
    )
    return config, str(path)


def test_omni_lora_only_adapters_train_and_save_load(tmp_path, omni_parts):
    from paras2s_pl.models.reward_omni import OmniRewardModel

    config, tok = omni_parts
    torch.manual_seed(0)
    rm = OmniRewardModel(
        thinker_config=config,
        tokenizer=tok,
        lora_r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
    )
    trainable = [n for n, p in rm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n == "score_delta" for n in trainable)
    assert all("language_model" in n for n in trainable if "lora_" in n)
    assert rm.thinker.model.visual is None  # dropped: unused
    q, r = tone(1.0, 200), tone(1.5, 300)
    batch = rm.featurizer.collate([rm.featurizer(q, r, 16000), rm.featurizer(r, q, 16000)])
    loss, _ = score_token_loss(rm(batch), torch.tensor([5, 1]))
    loss.backward()
    with_grad = {n for n, p in rm.named_parameters() if p.grad is not None}
    assert with_grad and with_grad <= set(trainable)
    assert any("lora_B" in n for n in with_grad) and "score_delta" in with_grad
    with torch.no_grad():  # non-trivial adapters so save -> load is tested on real values
        for p in rm.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    before = rm.score_logits([q, r], [r, q], 16000)
    rm.save_pretrained(tmp_path / "omni")
    assert (tmp_path / "omni" / "adapter" / "adapter_config.json").exists()
    loaded = load_reward_model(tmp_path / "omni")
    torch.testing.assert_close(before, loaded.score_logits([q, r], [r, q], 16000))


def test_omni_bf16_base_keeps_trainable_tensors_in_float32(omni_parts):
    """lr 1e-6 updates would vanish in bf16: adapters and score rows stay float32."""
    from paras2s_pl.models.reward_omni import OmniRewardModel

    config, tok = omni_parts
    rm = OmniRewardModel(thinker_config=config, tokenizer=tok, dtype="bfloat16")
    assert rm.thinker.lm_head.weight.dtype == torch.bfloat16
    assert {p.dtype for p in rm.parameters() if p.requires_grad} == {torch.float32}
    scores = rm.score([tone(1.0, 200)], [tone(1.0, 300)], 16000)
    assert scores.dtype == torch.float32 and 1 <= scores.item() <= 5


def test_omni_loads_the_thinker_out_of_a_full_omni_checkpoint(tmp_path, omni_parts):
    """A full Qwen2.5-Omni checkpoint nests the thinker (config and ``thinker.*`` weights)."""
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    from paras2s_pl.models.reward_omni import OmniRewardModel

    config, tok = omni_parts
    torch.manual_seed(0)
    thinker = Qwen2_5OmniThinkerForConditionalGeneration(Qwen2_5OmniThinkerConfig(**config))
    thinker.save_pretrained(tmp_path / "omni")
    weights = {f"thinker.{k}": v for k, v in load_file(tmp_path / "omni/model.safetensors").items()}
    weights["talker.unused.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "omni/model.safetensors", metadata={"format": "pt"})
    nested = {"model_type": "qwen2_5_omni", "thinker_config": thinker.config.to_dict()}
    (tmp_path / "omni/config.json").write_text(json.dumps(nested))
    rm = OmniRewardModel(model=str(tmp_path / "omni"), tokenizer=tok, drop_vision=False)
    torch.testing.assert_close(rm.thinker.lm_head.weight, thinker.lm_head.weight)
    layer = rm.thinker.model.language_model.layers[0].mlp.up_proj.base_layer.weight
    torch.testing.assert_close(layer, thinker.model.language_model.layers[0].mlp.up_proj.weight)


def test_omni_prompt_wraps_both_audios_in_the_guideline(omni_parts):
    from paras2s_pl.models.reward_omni import OmniRewardModel, audio_token_count

    config, tok = omni_parts
    rm = OmniRewardModel(thinker_config=config, tokenizer=tok, transcripts=True)
    f = rm.featurizer(tone(1.0, 200), tone(2.0, 300), 16000, "I lost my job.", "So sorry.")
    ids = f["input_ids"].tolist()
    n_audio = sum(i == rm.featurizer.ids["audio"] for i in ids)
    assert n_audio == sum(audio_token_count(x.shape[1]) for x in f["features"]) == 25 + 50
    text = rm.featurizer.tokenizer.decode(ids)
    assert "Continuation Fitness" in text and "Transcription: I lost my job." in text
    assert text.endswith("assistant\nThe score is ")


# ---- data ---------------------------------------------------------------------------------


def _raw_sample(key: str, meta: dict, resp: bytes | None = None) -> dict:
    buf = io.BytesIO()
    sf.write(buf, tone(0.5, 220), 16000, format="FLAC")
    out = {"__key__": key, "flac": buf.getvalue(), "json": json.dumps(meta).encode()}
    out["resp.flac"] = resp if resp is not None else buf.getvalue()
    return out


def test_preference_data_skips_and_counts_bad_input_and_holds_out_by_pair(tmp_path, tokens_model):
    m = write_tiny_set(tmp_path, "train", n=40, schema="preference")
    good = json.loads(
        json.dumps(
            PreferenceMeta(
                content="hi",
                speaker="m1",
                split="train",
                category="emotion",
                style="sad",
                pair_id="bad-pair",
                response_text="ok",
                response_tone="calm",
                score=3,
            ).__dict__
        )
    )
    with wds.TarWriter(str(tmp_path / "extra.tar")) as w:
        w.write(_raw_sample("b0", {**good, "score": 7}))
        w.write(_raw_sample("b1", {k: v for k, v in good.items() if k != "score"}))
        w.write(_raw_sample("b2", {**good, "score": "4"}))
        w.write(_raw_sample("b3", good, resp=b"not audio at all"))
        w.write(_raw_sample("b4", good))
    m["shards"].append({"file": "extra.tar", "count": 5})
    (tmp_path / "train.manifest.json").write_text(json.dumps(m))
    dm = PreferenceDataModule(str(tmp_path), batch_size=4, val_fraction=0.3)
    dm.set_featurizer(tokens_model.featurizer)
    dm.setup("fit")
    skipped = dm.stats["all"]["skipped"]
    assert skipped == {"bad_score": 2, "missing_score": 1, "bad_audio": 1}
    assert len(dm.train_items) + len(dm.val_items) == 41
    train_groups = {it["group"] for it in dm.train_items}
    val_groups = {it["group"] for it in dm.val_items}
    assert train_groups and val_groups and not train_groups & val_groups
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"features", "scores", "categories", "keys", "groups", "queries"}
    assert batch["features"]["audio_ids"].shape[0] == len(batch["scores"]) == 4
    assert query_group("age-001-adult_r007", "") == "age-001-adult"
    assert is_heldout("p", 0.5, 1) == is_heldout("p", 0.5, 1)


def test_streaming_mode_yields_the_same_split(tmp_path, tokens_model):
    write_tiny_set(tmp_path, "train", n=24, schema="preference")
    dm = PreferenceDataModule(str(tmp_path), batch_size=100, val_fraction=0.3)
    dm.set_featurizer(tokens_model.featurizer)
    dm.setup("fit")
    stream = PreferenceDataModule(
        str(tmp_path), batch_size=100, val_fraction=0.3, in_memory=False, shuffle=False
    )
    stream.set_featurizer(tokens_model.featurizer)
    val = next(iter(stream.val_dataloader()))
    assert sorted(val["keys"]) == [it["key"] for it in dm.val_items]


def test_val_queries_holds_out_a_fixed_number_of_query_groups(tmp_path, tokens_model):
    """Exactly N pair ids held out, by seed, never in training; same in streaming mode."""
    write_tiny_set(tmp_path, "train", n=40, schema="preference")  # 20 pair ids x 2 samples

    def split(**kw):
        dm = PreferenceDataModule(str(tmp_path), batch_size=100, **kw)
        dm.set_featurizer(tokens_model.featurizer)
        dm.setup("fit")
        return dm

    dm = split(val_queries=6)
    train = {it["group"] for it in dm.train_items}
    val = {it["group"] for it in dm.val_items}
    assert len(val) == 6 and len(train) == 14 and not train & val
    assert dm.stats["groups"] == {"train": 14, "val": 6}
    assert val == dm.heldout() == heldout_groups(train | val, 6, seed=0)
    assert {it["group"] for it in split(val_queries=6).val_items} == val  # deterministic
    assert heldout_groups(train | val, 3) < val  # a smaller N is a subset
    assert {it["group"] for it in split(val_queries=6, seed=1).val_items} != val
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == set(BATCH_KEYS) and batch["groups"] == [it["group"] for it in dm.val_items]
    assert batch["queries"] == [it["key"] for it in dm.val_items]  # no _rNNN suffix here
    stream = PreferenceDataModule(
        str(tmp_path), batch_size=100, val_queries=6, in_memory=False, shuffle=False
    )
    stream.set_featurizer(tokens_model.featurizer)
    assert sorted(next(iter(stream.val_dataloader()))["keys"]) == [it["key"] for it in dm.val_items]
    assert not {query_group(k, "") for k in next(iter(stream.train_dataloader()))["keys"]} & {
        it["key"] for it in dm.val_items
    }
    with pytest.raises(ValueError, match="val_queries=20.*leaves 0 for training"):
        split(val_queries=20)
    with pytest.raises(ValueError, match="set one of them to null"):
        PreferenceDataModule(str(tmp_path), val_queries=4, val_split="val")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            PreferenceDataModule(str(tmp_path), val_queries=bad)


# ---- the LightningModule --------------------------------------------------------------------


def test_module_steps_log_finite_metrics(tmp_path, tokens_model):
    write_tiny_set(tmp_path, "train", n=24, schema="preference")
    dm = PreferenceDataModule(str(tmp_path), batch_size=8, val_fraction=0.4)
    dm.set_featurizer(tokens_model.featurizer)
    dm.setup("fit")
    module = RewardModule(tokens_model, lr=1e-3, max_steps=10)
    batch = next(iter(dm.train_dataloader()))
    loss = module.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
    for batch in dm.val_dataloader():
        assert torch.isfinite(module.validation_step(batch, 0))
    assert module.val_pearson.n_total.item() == len(dm.val_items)
    cats = {c for it in dm.val_items for c in [it["category"]]}
    assert all(module.val_pearson_by[c].n_total.item() > 0 for c in cats)


def test_within_query_pearson_removes_what_only_the_query_mean_explains():
    """A model that knows only each query's mean: overall r high, within-query r ~ 0."""
    import numpy as np

    rng = np.random.default_rng(0)
    n_queries, k = 40, 6
    query_means = rng.normal(3.0, 1.0, n_queries)
    target = np.repeat(query_means, k) + rng.normal(0, 0.5, n_queries * k)
    queries = [f"q{i // k}" for i in range(n_queries * k)]
    groups = [f"p{i // (2 * k)}" for i in range(n_queries * k)]  # two queries per pair id
    cats = ["age" if i // k % 2 else "emotion" for i in range(n_queries * k)]
    knows_mean = np.repeat(query_means, k) + rng.normal(0, 0.01, n_queries * k)
    rep = heldout_report(knows_mean, target, cats, groups, queries, resamples=500, seed=0)
    assert rep["overall"]["r"] > 0.8 and abs(rep["within"]["r"]) < 0.2
    low, high = rep["within"]["ci95"]
    assert low < 0 < high and rep["overall"]["ci95"][0] > 0.6
    assert rep["groups"] == 20 and rep["queries"] == 40 and rep["pairs"] == 240
    # a model that ranks the responses of each query: within r high too
    ranks = target + rng.normal(0, 0.2, n_queries * k)
    rep = heldout_report(ranks, target, cats, groups, queries, resamples=500, seed=0)
    assert rep["within"]["r"] > 0.8 and rep["within"]["ci95"][0] > 0.6
    assert set(rep["categories"]) == {"age", "emotion"}
    assert rep == heldout_report(ranks, target, cats, groups, queries, resamples=500, seed=0)
    # the point values are plain Pearson r (scipy) of the raw and of the centred values
    from scipy.stats import pearsonr

    assert rep["overall"]["r"] == pytest.approx(pearsonr(ranks, target)[0])
    assert rep["categories"]["age"]["overall"]["r"] == pytest.approx(
        pearsonr(ranks[np.array(cats) == "age"], target[np.array(cats) == "age"])[0]
    )
    centred = [v - v.reshape(n_queries, k).mean(1).repeat(k) for v in (ranks, target)]
    assert rep["within"]["r"] == pytest.approx(pearsonr(*centred)[0])


class _ScriptedPearson(RewardModule):
    """val/pearson as scripted per validation (to force an earlier best); records the weights."""

    def __init__(self, *args, script=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.script, self.seen = list(script), []

    def _track_best(self, values):
        if not self.trainer.sanity_checking:
            values = {**values, "val/pearson": self.script[len(self.seen)]}
            state = {n: p.detach().clone() for n, p in self.model.named_parameters()}
            self.seen.append((self.trainer.global_step, state))
        super()._track_best(values)


@pytest.mark.parametrize("export_best", ["val/pearson", None])
def test_fit_exports_the_best_validation_not_the_last(tmp_path, export_best):
    import lightning as L

    write_tiny_set(tmp_path / "prefs", "train", n=40, schema="preference")
    L.seed_everything(0)
    module = _ScriptedPearson(
        TokensRewardModel(config=SMALL),
        lr=1e-2,
        export_dir=str(tmp_path / "export"),
        export_best=export_best,
        bootstrap_resamples=200,
        script=[0.3, 0.8, 0.1],
    )
    dm = PreferenceDataModule(str(tmp_path / "prefs"), batch_size=8, val_queries=6)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=6, val_check_interval=2, check_val_every_n_epoch=None,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=1,
    )  # fmt: skip
    trainer.fit(module, dm)
    assert [step for step, _ in module.seen] == [2, 4, 6]
    assert "val/pearson_within" in trainer.callback_metrics
    exported = load_reward_model(tmp_path / "export").state_dict()
    want = module.seen[1 if export_best else 2][1]
    other = module.seen[2 if export_best else 1][1]
    for name, value in want.items():
        torch.testing.assert_close(exported[name], value)
    assert any(not torch.equal(exported[n], v) for n, v in other.items())
    metrics = json.loads((tmp_path / "export" / "metrics.json").read_text())
    if export_best:
        assert metrics["exported"] == {
            "which": "best", "step": 4, "monitor": "val/pearson", "value": 0.8, "last_step": 6
        }  # fmt: skip
    else:
        assert metrics["exported"]["which"] == "last" and metrics["exported"]["step"] == 6
    held = metrics["heldout"]
    assert held["groups"] == 6 and held["resamples"] == 200
    assert {"overall", "within"} <= set(held) and held["overall"]["pairs"] == 12
    assert metrics["heldout_last"]["overall"]["r"] == pytest.approx(
        metrics["metrics"]["val/pearson"], abs=1e-4
    )
    assert metrics["global_step"] == 6 and "val/pearson" in metrics["metrics"]


# ---- budgets -------------------------------------------------------------------------------


def test_select_queries_by_pair_with_budget_exclude_and_offset(tmp_path):
    entries = [PoolEntry(f"p{i}-{s}", f"p{i}", 1800.0) for i in range(6) for s in "ab"]
    first = select_queries(entries, num_queries=4, seed=1)
    assert len(first) == 4 and len({e.pair_id for e in first}) == 2  # whole pairs
    assert select_queries(entries, num_queries=5, seed=1) == first  # a pair never overshoots
    assert select_queries(entries, hours=2.0, seed=1) == first  # 4 x 0.5 h
    rest = select_queries(entries, seed=1, exclude={e.pair_id for e in first})
    assert len(rest) == 8 and not {e.key for e in rest} & {e.key for e in first}
    assert select_queries(entries, num_queries=4, seed=1, offset=2) == rest[:4]
    (tmp_path / "ex.txt").write_text("p1  # a comment\np2-a\n")
    assert read_exclude(tmp_path / "ex.txt") == {"p1", "p2-a"}
    assert read_exclude(["x", "y"]) == {"x", "y"}


def test_subset_writes_a_budgeted_copy_and_a_selection_to_exclude(tmp_path):
    write_tiny_set(tmp_path / "pool", "train", n=12, schema="demo")
    rec = subset(tmp_path / "pool", tmp_path / "sft", num_queries=4, seed=0)
    manifest = read_manifest(tmp_path / "sft", "train")
    assert manifest["count"] == rec["queries"] == 4 and manifest["schema"] == "demo"
    sel = tmp_path / "sft" / "train.selection.json"
    rest = subset(tmp_path / "pool", tmp_path / "rm", exclude=sel, seed=0)
    assert rest["queries"] == 8 and not set(rest["keys"]) & set(rec["keys"])


# ---- configs --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mini/reward.yaml", "reward.yaml"])
def test_reward_configs_parse(name):
    """Parse and validate (no instantiation: the paper config names a 7B checkpoint)."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    class ParseOnly(LightningCLI):
        def instantiate_classes(self) -> None:
            pass

    cli = ParseOnly(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={"parser_mode": "omegaconf"},
        args=["--config", str(CONFIGS / name), "--trainer.max_steps", "100"],
        run=False,
    )
    cfg = cli.config
    assert cfg.model.class_path == "paras2s_pl.modules.reward.RewardModule"
    # the schedule follows the trainer's max_steps (an interpolation kept the file's value
    # under a command-line override: the demo's 100 steps ran a 600-step cosine)
    assert cfg.trainer.max_steps == 100 and cfg.model.init_args.max_steps is None
    if name == "reward.yaml":
        assert cfg.model.init_args.lr == 1e-6 and cfg.data.init_args.batch_size == 10


# ---- integration ----------------------------------------------------------------------------

TABLE = {  # query style -> response tone -> judge score: the synthetic preference function
    "happy": {"cheerful": 5, "empathetic": 1, "neutral": 3},
    "sad": {"cheerful": 1, "empathetic": 5, "neutral": 2},
    "angry": {"cheerful": 1, "empathetic": 3, "neutral": 4},
}
CONTENTS = [
    "I got the results back today.",
    "My sister called me this morning.",
    "The train was late again.",
    "We are moving to a new city.",
]
REPLIES = ["Tell me more about it.", "How do you feel about that?"]


def write_synthetic_prefs(root: Path, speakers=("m1", "f1", "m3")) -> dict:
    """Score = TABLE[query style][response tone]; contents and replies carry no signal."""
    tts = EspeakTTS(16000)
    replies = {
        (t, r): tts.synthesize(text, t, "f2")[0]
        for t in TABLE["happy"]
        for r, text in enumerate(REPLIES)
    }
    with ShardSetWriter(root, "train", "preference", maxcount=1000) as w:
        for (c, content), speaker in itertools.product(enumerate(CONTENTS), speakers):
            for style, tones in TABLE.items():
                query = tts.synthesize(content, style, speaker)[0]
                for (t, score), (r, reply) in itertools.product(tones.items(), enumerate(REPLIES)):
                    meta = PreferenceMeta(
                        content=content,
                        speaker=speaker,
                        split="train",
                        category="emotion",
                        style=style,
                        pair_id=f"c{c}-{speaker}",
                        response_text=reply,
                        response_tone=t,
                        score=score,
                    )
                    w.write(f"c{c}-{speaker}-{style}_r{t[:3]}{r}", meta, query, replies[(t, r)])
    return w.manifest


@pytest.mark.integration
def test_tiny_tokens_reward_model_reaches_heldout_pearson(tmp_path):
    import lightning as L

    write_synthetic_prefs(tmp_path / "prefs")
    L.seed_everything(0)
    module = RewardModule(
        TokensRewardModel(config=SMALL),
        lr=3e-3,
        warmup_steps=10,
        export_dir=str(tmp_path / "export"),
    )
    dm = PreferenceDataModule(str(tmp_path / "prefs"), batch_size=16, val_fraction=0.25)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=150,
        val_check_interval=50,
        check_val_every_n_epoch=None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    t0 = time.time()
    trainer.fit(module, dm)
    pearson = float(trainer.callback_metrics["val/pearson"])
    print(
        f"held-out pearson {pearson:.3f} after 150 steps, {time.time() - t0:.1f} s "
        f"({len(dm.train_items)} train / {len(dm.val_items)} val pairs)"
    )
    assert pearson >= 0.7
    assert "val/pearson/emotion" in trainer.callback_metrics
    rm = load_reward_model(tmp_path / "export")  # exported at fit end, scores like the module
    item = dm.val_items[0]
    batch = dm.featurizer.collate([item["features"]])
    module.eval()
    torch.testing.assert_close(rm(batch), module(batch))


class Counting:
    """Wrap a perceiver or judge and count the items it is asked about."""

    def __init__(self, inner, method: str):
        # private names: the perception cache id hashes a backend's public attributes
        self._inner, self._method, self._calls = inner, method, 0
        self.name = getattr(inner, "name", type(inner).__name__)
        self.stand_in = getattr(inner, "stand_in", False)

    @property
    def calls(self) -> int:
        return self._calls

    def __getattr__(self, name):
        if name == self.__dict__.get("_method"):

            def call(items, *args, **kwargs):
                self._calls += len(items)
                return getattr(self._inner, name)(items, *args, **kwargs)

            return call
        return getattr(self.__dict__["_inner"], name)


class FakeASR:
    name = "fake-asr"

    def transcribe(self, wavs, sample_rate):
        return ["thank you so much that is wonderful"] * len(wavs)


class FlakyJudge(RubricJudge):
    """The rubric, but the request for ``fail_key``'s responses errors (to test retries)."""

    def __init__(self, fail_key: str):
        self.fail_key = fail_key

    def score(self, items, on_result=None):
        out = super().score(items)
        out = [
            Judgement(score=None, error="HTTP 500") if it.key.startswith(self.fail_key) else j
            for it, j in zip(items, out, strict=True)
        ]
        if on_result is not None:
            for i, j in enumerate(out):
                on_result(i, j)
        return out


@pytest.mark.integration
def test_curate_preferences_end_to_end_and_resume(tmp_path):
    from paras2s_pl.audio.style import ProsodyCaptioner
    from paras2s_pl.cli import main
    from paras2s_pl.curate.preferences import Perceivers, curate_preferences, load_policy

    write_tiny_set(tmp_path / "pool", "train", n=8, schema="demo")
    tok = build_mini_tokenizer()
    torch.manual_seed(0)
    DualStreamLM(DualStreamConfig.tiny(len(tok), 264, **SMALL)).save_pretrained(tmp_path / "pol")
    tok.save_pretrained(tmp_path / "pol")
    out = tmp_path / "prefs"
    args = [
        "curate",
        "preferences",
        "--policy",
        str(tmp_path / "pol"),
        "--queries",
        str(tmp_path / "pool"),
        "--k",
        "2",
        "--out",
        str(out),
        "--transcript",
        "policy",
        "--max_new_tokens",
        "30",
        "--part_queries",
        "3",
        "--num_queries",
        "6",
    ]
    t0 = time.time()
    main(args)
    print(f"curated 6 queries x K=2 in {time.time() - t0:.1f} s")
    m = read_manifest(out, "train")
    assert m["queries"] == {"selected": 6, "done": 6, "pending": 0}
    assert m["count"] + sum(m["skipped"].values()) == 12
    assert sum(sum(h.values()) for h in m["score_histogram_by_category"].values()) == m["count"]
    pairs = list(ShardDataset(out, "train"))
    assert len(pairs) == m["count"] and all(1 <= p.meta.score <= 5 for p in pairs)
    assert all(p.key.rsplit("_r", 1)[1].isdigit() and p.assistant_audio.size for p in pairs)

    # a rerun with counting ASR and judge: nothing is asked again
    policy = load_policy(tmp_path / "pol", sampling={"max_new_tokens": 30})
    asr, judge = Counting(FakeASR(), "transcribe"), Counting(RubricJudge(), "score")
    p = Perceivers(asr, ProsodyCaptioner(), judge, transcript="policy")
    again = curate_preferences(
        policy, tmp_path / "pool", out, p, k=2, num_queries=6, part_queries=3, progress=False
    )
    assert judge.calls == asr.calls == 0 and again["count"] == m["count"]

    # ASR transcripts into a new set; one query's judge request fails: it is retried later
    out2 = tmp_path / "prefs_asr"
    fail = sorted(json.loads((out / "train.selection.json").read_text())["keys"])[0]
    p = Perceivers(asr, ProsodyCaptioner(), FlakyJudge(fail), transcript="asr")
    first = curate_preferences(
        policy, tmp_path / "pool", out2, p, k=2, num_queries=6, part_queries=3, progress=False
    )
    assert first["queries"]["done"] == 5
    n_transcribed = asr.calls  # 12 unless a random response came out empty (skipped)
    assert 0 < n_transcribed <= 12
    judge = Counting(RubricJudge(), "score")
    p = Perceivers(asr, ProsodyCaptioner(), judge, transcript="asr")
    second = curate_preferences(
        policy, tmp_path / "pool", out2, p, k=2, num_queries=6, part_queries=3, progress=False
    )
    assert second["queries"]["done"] == 6
    assert asr.calls == n_transcribed  # the retried query's audio is the same: cached
    assert 0 < judge.calls <= 2  # only the failed query's responses
    assert all(
        s.meta.response_text == "thank you so much that is wonderful"
        for s in ShardDataset(out2, "train")
    )


@pytest.mark.integration
def test_mini_reward_config_fits_and_exports(tmp_path):
    """``paras2s fit --config configs/mini/reward.yaml`` runs (a few steps) and exports."""
    from paras2s_pl.cli import main

    write_tiny_set(tmp_path / "prefs", "train", n=40, schema="preference")
    main(["fit", "--config", str(CONFIGS / "mini/reward.yaml"),
          "--data.init_args.root", str(tmp_path / "prefs"), "--data.init_args.encode_workers", "0",
          "--data.init_args.val_fraction", "0.3", "--trainer.max_steps", "4",
          "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
          "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
          "--model.init_args.export_dir", str(tmp_path / "reward_model")])  # fmt: skip
    export = tmp_path / "reward_model"
    rm = load_reward_model(export)
    assert json.loads((export / "metrics.json").read_text())["global_step"] == 4
    assert rm.score([tone(0.5, 200)], [tone(0.5, 300)], 16000).shape == (1,)
    assert list((tmp_path / "runs" / "reward" / "version_0" / "checkpoints").glob("*.ckpt"))
