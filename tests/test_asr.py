"""Tests for the ASR backends, the domain LM and WER.

Bounds: PocketSphinx and eSpeak NG are deterministic, so WERs only move when the seed
text, the TTS presets, the LM estimator or a library version changes. Measured on the
8 seed contents of the ``spoken`` fixture (neutral eSpeak, default speaker, 16 kHz):
domain LM WER 0.126 (14 errors / 111 words, 2 from the OOV word "lunchbox"); on the first
4 of them domain 0.157 vs generic 0.490. Each bound is the measured value plus the margin
noted next to it. Whisper is only checked for plumbing (tiny random model, no download).
"""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

from paras2s_pl.audio import lm as lm_module
from paras2s_pl.audio.asr import (
    ASR,
    PocketSphinxASR,
    WhisperASR,
    normalize_text,
    split_at_pauses,
    wer,
)
from paras2s_pl.audio.io import AudioError, resample
from paras2s_pl.audio.tts import EspeakTTS
from paras2s_pl.data.seed import load_seed

pytest.importorskip("pocketsphinx")

RATE = 16000
DOMAIN_WER_BOUND = 0.20  # measured 0.126; margin: 8 more errors in 111 words
LONG_WER_BOUND = 0.25  # measured 0.157 (the first 4 sentences in 60 s; a cut may split a word)


@pytest.fixture(scope="module")
def spoken() -> tuple[list[str], list[np.ndarray]]:
    """8 seed contents (every 36th: all categories) spoken neutrally, at 16 kHz."""
    items = load_seed()[::36]
    tts = EspeakTTS()
    wavs = [resample(*tts.synthesize(it.content, "neutral"), RATE) for it in items]
    return [it.content for it in items], wavs


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("asr_lm"))


@pytest.fixture(scope="module")
def asr(lm_dir) -> PocketSphinxASR:
    return PocketSphinxASR(lm_dir=lm_dir)


@pytest.fixture(scope="module")
def domain_hyps(asr, spoken) -> list[str]:
    return asr.transcribe(spoken[1], RATE)


# --------------------------------------------------------------------------- text + WER


def test_normalize_text():
    assert normalize_text("Hello,  World!\nIt's   fine.") == "hello world it's fine"
    assert normalize_text("My in-laws\u2019 café — ‘really’?") == "my in laws cafe really"
    assert normalize_text("Don't STOP; can't stop!") == "don't stop can't stop"  # kept as is
    assert normalize_text("  ...  ") == ""


def test_wer_hand_computed():
    # 6 reference words, hyp drops "the": 1 deletion / 6.
    assert wer(["The cat sat.", "on the mat"], ["the cat sat", "on mat"]) == pytest.approx(1 / 6)
    # "a b c d" vs "a x c d e": 1 substitution + 1 insertion over 4 words = 0.5.
    assert wer(["a b c d"], ["A x c d e"]) == pytest.approx(0.5)
    # corpus level: (0 + 2 deletions) / (1 + 2) words, not the mean of 0 and 1.
    assert wer(["yes", "no way"], ["yes", ""]) == pytest.approx(2 / 3)
    assert wer(["It's OK!"], ["it's ok"]) == 0.0


def test_wer_rejects_bad_input():
    with pytest.raises(ValueError, match="2 references but 1"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no words"):
        wer(["", "?!"], ["a", "b"])


# --------------------------------------------------------------------------- language model


def test_estimator_hand_computed():
    """Sentences "a b", "a b", "a c".

    Unigrams a:3 b:2 c:1 </s>:3 (N=9). Bigrams (<s> a):3 (a b):2 (a c):1 (b </s>):2
    (c </s>):1, so n1=2, n2=2 and D = 2/(2+4) = 1/3. For context "a" (3 tokens, 2 types):
    gamma = D*2/3 = 2/9; p(b|a) = (2-1/3)/3 + 2/9 * 2/9 = 49/81; p(c|a) = (1-1/3)/3
    + 2/9 * 1/9 = 20/81; unseen a, </s> get 2/9 * 3/9 = 6/81 each: 49+20+6+6 = 81.
    """
    counts = lm_module.count_ngrams([["a", "b"], ["a", "b"], ["a", "c"]], frozenset("abc"), 2)
    uni, bi = lm_module.estimate(counts)
    assert uni[("a",)][0] == pytest.approx(3 / 9)
    assert bi[("a", "b")][0] == pytest.approx(49 / 81)
    assert bi[("a", "c")][0] == pytest.approx(20 / 81)
    assert uni[("a",)][1] == pytest.approx(2 / 9)  # backoff weight sits on the context
    assert uni[("c",)][1] == pytest.approx(1 / 3)  # one token, one type: gamma = D
    assert uni[("</s>",)][1] is None  # never a context


def _prob(tables, ngram: tuple[str, ...]) -> float:
    """p(w | h) under ARPA backoff semantics, from read_arpa tables (log10)."""
    n = len(ngram)
    if ngram in tables[n - 1]:
        return 10 ** tables[n - 1][ngram][0]
    bo = tables[n - 2].get(ngram[:-1], (0.0, None))[1]
    return 10 ** (bo or 0.0) * _prob(tables, ngram[1:])


def test_domain_lm_is_valid_arpa_and_cached(lm_dir):
    built = lm_module.build_domain_lm(lm_module.mini_world_text(), cache_dir=lm_dir)
    header, tables = lm_module.read_arpa(built.lm_path)
    assert header == {n: len(t) for n, t in enumerate(tables, 1)} and len(header) == 3
    assert tuple(header.values()) == built.ngram_counts
    assert all(lp <= 0 for t in tables for lp, _ in t.values())
    assert all(g[:2] in tables[1] for g in tables[2])  # every trigram's prefix is listed
    vocab = [g for g in tables[0] if g != ("<s>",)]
    for h in [("<s>",), ("the",), ("<s>", "can"), ("i", "am")]:  # each context sums to 1
        assert sum(_prob(tables, h + w) for w in vocab) == pytest.approx(1.0, abs=1e-4)
    dict_words = {ln.split()[0].split("(")[0] for ln in built.dict_path.read_text().splitlines()}
    assert dict_words == {w for (w,) in vocab if w != "</s>"}
    assert "kurta" in built.oov and "kurta" not in dict_words  # no pronunciation: dropped

    mtime = built.lm_path.stat().st_mtime_ns
    again = lm_module.build_domain_lm(lm_module.mini_world_text(), cache_dir=lm_dir)
    assert again.cached and again.directory == built.directory
    assert again.lm_path.stat().st_mtime_ns == mtime
    other = lm_module.build_domain_lm(["hello world"], cache_dir=lm_dir)
    assert other.directory != built.directory and not other.cached


def test_domain_lm_reports_oov_and_extra_text(tmp_path):
    extra = tmp_path / "extra.txt"
    extra.write_text("Please water the zzqxv plants.\n\nThe plants are thirsty.\n")
    built = lm_module.build_domain_lm(extra.read_text().splitlines(), cache_dir=tmp_path)
    assert built.oov == {"zzqxv": 1} and built.vocab_size == 6
    _, tables = lm_module.read_arpa(built.lm_path)
    assert ("the", "plants") in tables[1] and ("water", "the", "plants") not in tables[2]
    assert len(lm_module.mini_world_text([extra])) == len(lm_module.mini_world_text()) + 2
    with pytest.raises(FileNotFoundError, match="extra_text_files"):
        lm_module.mini_world_text([tmp_path / "missing.txt"])
    with pytest.raises(ValueError, match="no word"):
        lm_module.build_domain_lm(["zzqxv qqzzv"], cache_dir=tmp_path)


def test_domain_lm_counts_oov_words_in_one_info_line_and_lists_them_at_debug(tmp_path, caplog):
    texts = ["please water the zzqxv plants", "the qqzzv plants are thirsty"]
    with caplog.at_level(logging.INFO, logger=lm_module.log.name):
        lm_module.build_domain_lm(texts, cache_dir=tmp_path / "a")
    oov_lines = [r for r in caplog.records if "left out" in r.getMessage()]
    assert len(oov_lines) == 1 and oov_lines[0].levelno == logging.INFO
    assert "2 word(s)" in oov_lines[0].getMessage() and "zzqxv" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=lm_module.log.name):
        lm_module.build_domain_lm(texts, cache_dir=tmp_path / "b")
    assert "qqzzv zzqxv" in caplog.text


# --------------------------------------------------------------------------- PocketSphinx


def test_protocol():
    assert isinstance(PocketSphinxASR(), ASR) and isinstance(WhisperASR(), ASR)


def test_pocketsphinx_domain_lm_wer(spoken, domain_hyps):
    refs, _ = spoken
    assert len(domain_hyps) == len(refs) and all(isinstance(h, str) for h in domain_hyps)
    assert wer(refs, domain_hyps) < DOMAIN_WER_BOUND, list(zip(refs, domain_hyps, strict=True))


@pytest.mark.integration  # the generic LM decodes at ~0.5x real time: ~8 s here
def test_domain_lm_beats_generic(spoken, domain_hyps):
    refs, wavs = spoken[0][:4], spoken[1][:4]
    generic = PocketSphinxASR(use_domain_lm=False).transcribe(wavs, RATE)
    assert wer(refs, domain_hyps[:4]) < wer(refs, generic)


def test_pocketsphinx_resamples_and_pickles(asr, spoken, domain_hyps):
    wav = spoken[1][1]
    at_22k = asr.transcribe([resample(wav, RATE, 22050)], 22050)[0]
    assert wer([spoken[0][1]], [at_22k]) <= wer([spoken[0][1]], [domain_hyps[1]]) + 0.1
    clone = pickle.loads(pickle.dumps(asr))
    assert clone._decoder is None and clone.transcribe([wav], RATE) == [domain_hyps[1]]


def test_bad_decoder_option_is_named():
    asr = PocketSphinxASR(use_domain_lm=False, decoder_options={"no_such_option": 1})
    with pytest.raises(ValueError, match="no_such_option.*describe"):
        asr.transcribe([np.full(RATE // 10, 0.1, np.float32)], RATE)


def test_bad_inputs(asr, spoken):
    refs, wavs = spoken
    silence = np.zeros(RATE, np.float32)  # the generic model hears "dog" here
    short = wavs[0][: RATE // 10]
    out = asr.transcribe([silence, short, np.zeros(0, np.float32), silence * 1e-5], RATE)
    assert out[0] == "" and out[2] == "" and out[3] == ""
    assert isinstance(out[1], str) and len(out[1].split()) <= 2
    bad = wavs[0].copy()
    bad[100] = np.nan
    with pytest.raises(AudioError, match=r"wavs\[1\] holds 1 NaN.*nan_to_num"):
        asr.transcribe([wavs[0], bad], RATE)
    with pytest.raises(TypeError, match=r"\[wav\]"):
        asr.transcribe(wavs[0], RATE)


def test_long_form_60s(asr, spoken):
    refs, wavs = spoken
    gap = np.zeros(RATE, np.float32)
    parts = [np.concatenate([w, gap]) for w in wavs[:4]]
    long = np.concatenate(parts + [np.zeros(60 * RATE - sum(p.size for p in parts), np.float32)])
    assert long.size == 60 * RATE
    chunks = split_at_pauses(long, RATE, asr.max_segment_s)
    assert len(chunks) > 1 and sum(c.size for c in chunks) == long.size
    (text,) = asr.transcribe([long], RATE)
    assert wer([" ".join(refs[:4])], [text]) < LONG_WER_BOUND, text


# --------------------------------------------------------------------------- Whisper


def tiny_whisper():
    """A random 2-layer Whisper (d_model 64) with a byte-level tokenizer built offline.

    The vocabulary is the 256 byte symbols, Whisper's special tokens (English only) and
    the 1501 timestamp tokens, so long-form generation (which predicts timestamps) runs.
    """
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>",
                "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
                "<|notimestamps|>"]  # fmt: skip
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    for token in specials + [f"<|{i * 0.02:.2f}|>" for i in range(1501)]:
        vocab[token] = len(vocab)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    eot, sot = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(vocab), d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
        decoder_ffn_dim=128, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=448, decoder_start_token_id=sot, pad_token_id=eot,
        bos_token_id=eot, eos_token_id=eot,
    )  # fmt: skip
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
        no_timestamps_token_id=vocab["<|notimestamps|>"], lang_to_id={"<|en|>": vocab["<|en|>"]},
        task_to_id={"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]},
        is_multilingual=True, max_initial_timestamp_index=50,
    )  # fmt: skip
    return model, WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer)


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.integration  # 5-10 s, mostly the first `import transformers` of the session
def test_whisper_tiny_end_to_end(offline, spoken):
    model, processor = tiny_whisper()
    asr = WhisperASR.from_components(model, processor, batch_size=2, max_new_tokens=6)
    wav = spoken[1][0]
    long = np.concatenate([wav] * 10)[: 35 * RATE]  # > 30 s: the long-form path
    assert long.size > processor.feature_extractor.n_samples
    out = asr.transcribe([resample(wav, RATE, 22050), resample(long, RATE, 22050)], 22050)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    out = asr.transcribe([np.zeros(RATE, np.float32), wav, np.zeros(0, np.float32)], RATE)
    assert len(out) == 3 and out[0] == "" and out[2] == ""


def test_whisper_is_lazy_and_explains_missing_model(offline, tmp_path):
    asr = WhisperASR(model=str(tmp_path / "no-such-whisper"), local_files_only=True)
    assert asr._model is None  # constructing never loads
    assert asr.transcribe([np.zeros(RATE, np.float32)], RATE) == [""]  # nothing to decode
    with pytest.raises(FileNotFoundError, match="no-such-whisper' does not exist"):
        asr.transcribe([np.full(RATE, 0.1, np.float32)], RATE)
    with pytest.raises(OSError, match="whisper-large-v3' is not available here.*local directory"):
        WhisperASR(local_files_only=True).transcribe([np.full(RATE, 0.1, np.float32)], RATE)
