"""SFT stage: loss maths, DataModule batches and bad input, the LightningModule, configs.

The demo shards are synthesised once per module into ``tmp_path`` (eSpeak, 8 train and 8 test
samples, a few seconds); the tiny synthetic sets of :mod:`paras2s_pl.testing` (sine tones)
serve the bad-input cases. Integration tests: an overfit run that must reproduce the reference
replies, and ``paras2s fit --config configs/mini/sft.yaml`` for two steps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import webdataset as wds

from paras2s_pl.audio.codec import ProsodyCodec
from paras2s_pl.audio.io import encode_audio
from paras2s_pl.cli import lightning_cli, main
from paras2s_pl.data.sft import BATCH_KEYS, SFTDataModule
from paras2s_pl.data.shards import manifest_path
from paras2s_pl.losses.sft import sft_loss
from paras2s_pl.models.dual_stream import DualStreamConfig, DualStreamLM
from paras2s_pl.models.layout import IGNORE_INDEX
from paras2s_pl.modules.sft import SFTModule, check_data_compatibility
from paras2s_pl.testing import SMALL_POLICY, tiny_meta, tone, write_tiny_set

X = IGNORE_INDEX
REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
SMALL = SMALL_POLICY  # memorises 4 replies in a few dozen steps on CPU


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from paras2s_pl.data.demo import build_demo

    out = tmp_path_factory.mktemp("demo")
    build_demo(out, contents_per_category=2, workers=1)
    return out


@pytest.fixture(scope="module")
def dm(demo) -> SFTDataModule:
    data = SFTDataModule(str(demo), batch_size=4, max_len=320)
    data.setup("fit")
    return data


def recorder(module: SFTModule) -> dict:
    logged: dict = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, value)
    return logged


# ---- loss ---------------------------------------------------------------------------------


def test_sft_loss_hand_computed():
    """Three positions, vocabulary 2; logits[t] predicts labels[t + 1].

    text: labels [-, 1, 0]. logits[0] = [0, 0] -> p(1) = 1/2, CE ln 2, argmax 0 (wrong);
          logits[1] = [ln 3, 0] -> p(0) = 3/4, CE ln 4/3, argmax 0 (right);
          logits[2] would predict past the end: [100, -100] must not count.
          L_text = (ln 2 + ln 4/3) / 2 = ln(8/3) / 2, acc 1/2.
    audio: labels [-, -, 1]. logits[1] = [0, ln 4] -> p(1) = 4/5, CE ln 5/4, acc 1;
          logits[0] is unlabelled ([-100, 100] must not count).
    loss = 1 * ln(8/3)/2 + 2 * ln(5/4).
    """
    text_logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [100.0, -100.0]]])
    audio_logits = torch.tensor([[[-100.0, 100.0], [0.0, math.log(4)], [100.0, -100.0]]])
    text_logits.requires_grad_(True)
    loss, stats = sft_loss(
        text_logits,
        audio_logits,
        torch.tensor([[X, 1, 0]]),
        torch.tensor([[X, X, 1]]),
        text_weight=1.0,
        audio_weight=2.0,
    )
    assert stats["loss_text"].item() == pytest.approx(math.log(8 / 3) / 2, abs=1e-6)
    assert stats["loss_audio"].item() == pytest.approx(math.log(5 / 4), abs=1e-6)
    assert loss.item() == pytest.approx(math.log(8 / 3) / 2 + 2 * math.log(5 / 4), abs=1e-6)
    assert stats["acc_text"].item() == pytest.approx(0.5)
    assert stats["acc_audio"].item() == pytest.approx(1.0)
    assert (stats["tokens_text"].item(), stats["tokens_audio"].item()) == (2, 1)
    loss.backward()
    assert text_logits.grad[0, 2].abs().sum() == 0  # the last position predicts nothing


def test_sft_loss_stream_without_labels_is_zero_not_nan():
    logits = torch.randn(2, 4, 5, requires_grad=True)
    labels = torch.full((2, 4), X)
    loss, stats = sft_loss(logits, logits, labels, labels)
    assert loss.item() == 0.0 and stats["acc_text"].item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


# ---- DataModule -----------------------------------------------------------------------------


def test_datamodule_batches_have_documented_keys_and_shapes(dm):
    cfg = dm.layout_config()
    assert (cfg.text_vocab_size, cfg.audio_vocab_size) == (dm.text_vocab_size, 264)
    assert dm.stats["train"]["read"] == len(dm.train_examples) == 8
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == set(BATCH_KEYS)
    b, width = batch["audio_ids"].shape
    assert b == 4 and len(batch["keys"]) == 4
    for key in ("text_ids", "audio_labels", "text_labels", "attention_mask"):
        assert batch[key].shape == (b, width)
    assert batch["lengths"].max() == width
    for row in range(b):
        p, n = int(batch["prompt_lens"][row]), int(batch["lengths"][row])
        assert (batch["text_labels"][row, :p] == X).all()  # no loss on the query
        assert (batch["audio_labels"][row, :p] == X).all()
        assert (batch["attention_mask"][row, n:] == 0).all()
        assert (batch["text_labels"][row, n:] == X).all()
        real_text = batch["text_labels"][row, p:n]
        assert (real_text == cfg.text_eos_id).sum() == 1  # text then text_eos
        assert batch["audio_labels"][row, n - 1] == cfg.audio_end_id or batch["truncated"][row]
    # validation prompts: left-padded, references attached
    queries = dm.val_queries[:3]
    prompts = dm.prompt_batch(queries)
    assert prompts["attention_mask"][:, -1].all()
    assert prompts["audio_ids"][:, -1].tolist() == [cfg.assistant_start_id] * 3
    assert all(q.response_text and q.content for q in queries)
    assert dm.tokenizer.decode(queries[0].response_text_ids) == queries[0].response_text


def _append_bad_samples(root: Path, split: str) -> None:
    """A second shard holding an empty transcript and an empty reply (the writer refuses them)."""
    shard = root / f"{split}-000001.tar"
    with wds.TarWriter(str(shard)) as sink:
        for i, field in enumerate(("content", "response_text")):
            meta = json.loads(json.dumps(tiny_meta(10 + i, "demo", split).__dict__))
            meta[field] = "   "
            sink.write({
                "__key__": f"bad{i}",
                "flac": encode_audio(tone(0.5, 220), 16000, "flac"),
                "resp.flac": encode_audio(tone(0.4, 300), 16000, "flac"),
                "json": json.dumps(meta).encode(),
            })  # fmt: skip
    manifest = json.loads(manifest_path(root, split).read_text())
    manifest["shards"].append({"file": shard.name, "count": 2})
    manifest_path(root, split).write_text(json.dumps(manifest))


def test_empty_transcript_and_reply_are_skipped_and_counted(tmp_path):
    write_tiny_set(tmp_path, "train", n=4, schema="demo")
    write_tiny_set(tmp_path, "test", n=2, schema="demo")
    _append_bad_samples(tmp_path, "train")
    data = SFTDataModule(str(tmp_path), batch_size=2)
    data.setup("fit")
    stats = data.stats["train"]
    assert stats["skipped"]["invalid_meta"] == 2  # the demo schema rejects both, by field
    assert stats["read"] == 4 and len(data.train_examples) == 4
    assert all(not key.startswith("bad") for key, _ in data.train_examples)


@pytest.mark.parametrize("mode", ["truncate", "skip"])
def test_too_long_responses_truncated_or_skipped_and_counted(tmp_path, mode):
    write_tiny_set(tmp_path, "train", n=6, schema="demo")
    write_tiny_set(tmp_path, "test", n=2, schema="demo")
    full = SFTDataModule(str(tmp_path), max_len=512)
    full.setup("fit")
    lengths = sorted(len(ex) for _, ex in full.train_examples)
    max_len = lengths[len(lengths) // 2]  # about half the examples are longer
    longer = sum(n > max_len for n in lengths)
    assert 0 < longer < len(lengths)
    data = SFTDataModule(str(tmp_path), max_len=max_len, too_long=mode)
    data.setup("fit")
    stats = data.stats["train"]
    assert all(len(ex) <= max_len for _, ex in data.train_examples)
    if mode == "truncate":
        assert stats["truncated"] == longer and len(data.train_examples) == len(lengths)
        assert sum(ex.truncated for _, ex in data.train_examples) == longer
    else:
        assert stats["skipped"]["too_long"] == longer and stats["truncated"] == 0
        assert len(data.train_examples) == len(lengths) - longer
    # a prompt that alone reaches max_len is skipped in either mode; nothing left is an error
    prompts = sorted(ex.prompt_len for _, ex in full.train_examples)
    short = SFTDataModule(str(tmp_path), max_len=prompts[-1], too_long=mode)
    if mode == "truncate":
        short.setup("fit")
        assert short.stats["train"]["skipped"]["prompt_too_long"] == prompts.count(prompts[-1])
    else:
        with pytest.raises(ValueError, match=r"no usable SFT examples.*prompt_too_long"):
            short.setup("fit")


def test_codec_vocab_mismatch_fails_at_startup_naming_both_numbers(tmp_path):
    write_tiny_set(tmp_path / "shards", "train", n=2, schema="demo")
    write_tiny_set(tmp_path / "shards", "test", n=2, schema="demo")
    DualStreamLM(DualStreamConfig.tiny(**SMALL)).save_pretrained(tmp_path / "policy")  # 264 codes
    small_codec = ProsodyCodec(pitch_bins=16)  # (16 + 1) * 8 = 136 codes
    data = SFTDataModule(str(tmp_path / "shards"), codec=small_codec)
    module = SFTModule(init_from=str(tmp_path / "policy"))
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"136 codes.*audio_vocab_size=264"):
        trainer.fit(module, data)
    assert data.stats == {}  # raised before any audio was encoded
    # a codec larger than the model's block: the config's own check
    with pytest.raises(ValueError, match=r"512 codes.*audio_vocab_size=264"):
        check_data_compatibility(DualStreamConfig.tiny(), 512, 512)
    with pytest.raises(ValueError, match=r"tokenizer has 600 ids.*text_vocab_size=512"):
        check_data_compatibility(DualStreamConfig.tiny(), 600, 264)


# ---- LightningModule ----------------------------------------------------------------------


def test_training_and_validation_step_direct(dm):
    module = SFTModule(
        text_vocab_size=dm.text_vocab_size, codec_vocab_size=dm.codec_vocab_size, model_config=SMALL
    )
    module.configure_model()
    logged = recorder(module)
    batch = next(iter(dm.train_dataloader()))
    loss = module.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(2 * math.log(module.model.config.vocab_size), rel=0.05)
    for name in ("loss", "loss_text", "loss_audio", "acc_text", "acc_audio"):
        assert torch.isfinite(torch.as_tensor(logged[f"train/{name}"]))
    loss.backward()
    assert module.model.mimo_output.weight.grad.abs().sum() > 0  # audio head trained
    assert module.model.lm_head.weight.grad.abs().sum() > 0  # text head trained
    module.validation_step(next(iter(dm.val_dataloader())), 1)
    assert {f"val/{n}" for n in ("loss", "loss_text", "loss_audio")} <= set(logged)


def test_optimizer_warmup_then_cosine():
    module = SFTModule(text_vocab_size=512, codec_vocab_size=264, model_config=SMALL, lr=1e-3,
                       warmup_steps=10, max_steps=110)  # fmt: skip
    module.configure_model()
    conf = module.configure_optimizers()
    optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(110):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0 and lrs[5] == pytest.approx(5e-4) and lrs[10] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx(5e-4, rel=1e-3) and lrs[-1] < 1e-6


@pytest.mark.integration
def test_overfit_then_greedy_generation_reproduces_reference_replies(demo):
    torch.manual_seed(0)
    data = SFTDataModule(str(demo), val_split="train", val_limit=4, batch_size=4)
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))  # the 4 demos, one batch
    steps = 100
    module = SFTModule(text_vocab_size=data.text_vocab_size, codec_vocab_size=264,
                       model_config=SMALL, lr=1e-2, warmup_steps=10, max_steps=steps)  # fmt: skip
    module.configure_model()
    module.tokenizer = data.tokenizer
    recorder(module)
    conf = module.configure_optimizers()
    optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    for step in range(steps):
        loss = module.training_step(batch, step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    assert loss.item() < 0.05  # near zero (about 0.01 at 100 steps)
    module.eval()
    rows = module.respond(data.prompt_batch(data.val_queries))
    for row, query in zip(rows, data.val_queries, strict=True):
        assert row["text"] == query.response_text
        assert row["finished"] and torch.equal(row["codes"], query.response_codes)


# ---- configs and the CLI ------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_config_parses(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        lightning_cli(["fit", "--config", str(path), "--print_config"])
    assert exit_.value.code == 0
    assert "class_path" in capsys.readouterr().out


def test_mini_sft_config_instantiates_without_data():
    cli = lightning_cli(
        ["--config", str(REPO / "configs/mini/sft.yaml"), "--trainer.max_steps", "300"], run=False
    )
    assert isinstance(cli.model, SFTModule) and isinstance(cli.datamodule, SFTDataModule)
    assert cli.model.model is None  # built in configure_model, not in __init__
    # the cosine follows the trainer's max_steps, the demo's command-line 300 included (an
    # interpolation of it kept the file's 400: the demo's SFT stopped at 3/4 of its cosine)
    assert cli.trainer.max_steps == 300 and cli.model.hparams.max_steps is None


@pytest.mark.integration
def test_cli_fit_mini_sft_end_to_end(demo, tmp_path):
    cli = main([
        "fit", "--config", str(REPO / "configs/mini/sft.yaml"),
        "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
        "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--data.root", str(demo), "--data.init_args.encode_workers", "0",
        "--data.init_args.val_limit", "4",
        "--model.init_args.val_generate", "1", "--model.init_args.sampling.max_new_tokens", "12",
        "--model.init_args.export_dir", str(tmp_path / "sft_policy"),
    ])  # fmt: skip
    metrics = cli.trainer.callback_metrics
    for name in ("train/loss", "train/lr", "val/loss", "val/loss_audio", "val/gen_text_exact"):
        assert name in metrics and torch.isfinite(metrics[name])
    log_dir = Path(cli.trainer.log_dir)
    assert log_dir.parent == tmp_path / "sft" and list(log_dir.glob("events.out.tfevents.*"))
    policy = tmp_path / "sft_policy"  # the config's export_dir, redirected
    assert (policy / "config.json").exists() and (policy / "tokenizer.json").exists()
    info = json.loads((policy / "paras2s_policy.json").read_text())
    assert info["codec"].endswith("ProsodyCodec") and info["codec_vocab_size"] == 264
    assert info["query_transcript"] is True  # the config's, the paper's (a_i, t_i)
    reloaded = DualStreamLM.from_pretrained(policy)
    trained = cli.model.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in reloaded.state_dict().items())
    # a Lightning checkpoint rebuilds the model without the data (sizes are in its hparams)
    restored = SFTModule.load_from_checkpoint(log_dir / "checkpoints" / "last.ckpt")
    assert torch.equal(restored.model.lm_head.weight, cli.model.model.lm_head.weight)


def test_constant_lr_schedule_holds_the_peak_after_warmup():
    from paras2s_pl.modules.grpo import GRPOModule

    module = GRPOModule(init_from=None, text_vocab_size=512, codec_vocab_size=264,
                        model_config=SMALL, lr=1e-3, warmup_steps=4, max_steps=20,
                        lr_schedule="constant")  # fmt: skip
    module.configure_model()
    conf = module.configure_optimizers()
    optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[2] == pytest.approx(5e-4) and all(lr == pytest.approx(1e-3) for lr in lrs[4:])
    with pytest.raises(ValueError, match="lr_schedule"):
        GRPOModule(init_from=None, lr_schedule="linear")
