"""Audio codecs: the prosody codec's round trip keeps the style; layouts, bounds, bad input.

Margins: each tolerance below is about twice the worst error measured on the stated set
with espeakng-loader's eSpeak NG 1.52 and parselmouth's Praat (eSpeak and Praat are
deterministic, so the numbers only move with the presets, eSpeak, Praat or the codec).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paras2s_pl.audio import codec as codec_module
from paras2s_pl.audio.codec import AudioCodec, ProsodyCodec, calibrate_voice, check_tokens
from paras2s_pl.audio.codec_calibration import CALIBRATION
from paras2s_pl.audio.io import AudioError
from paras2s_pl.audio.neural_codec import KimiAudioCodec, MimiCodec, tiny_mimi_model
from paras2s_pl.audio.prosody import summarize
from paras2s_pl.audio.tts import EspeakTTS
from paras2s_pl.data import labels

pytest.importorskip("parselmouth")

TEXT = "I can't believe you finished the whole project before lunch today."
TEXT2 = "Do you want to go to the park with me this afternoon?"
SR = 16000
HOP = 1280  # samples per token at 16 kHz


@pytest.fixture(scope="module")
def codec() -> ProsodyCodec:
    return ProsodyCodec()


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    return EspeakTTS(SR)


@pytest.fixture(scope="module")
def round_trip(codec, tts):
    """Cached ``(style, speaker, text) -> (input wav, tokens, decoded wav)``."""
    cache = {}

    def _rt(style: str, speaker: str | None, text: str = TEXT):
        if (style, speaker, text) not in cache:
            wav, _ = tts.synthesize(text, style, speaker)
            tokens = codec.encode(wav, SR)
            out, sr = codec.decode(tokens, text)
            assert sr == SR
            cache[style, speaker, text] = (wav, tokens, out)
        return cache[style, speaker, text]

    return _rt


@pytest.fixture(scope="module")
def mimi_model():
    return tiny_mimi_model()


def speaker_for(i: int, style: str) -> str | None:
    """A query speaker per style, cycling through the test speakers (None: the preset's)."""
    return None if style in ("male", "female") else ("m6", "f4", "m7", "f5")[i % 4]


# --------------------------------------------------------------------------- layout
def test_protocol_and_vocab_layout(codec, mimi_model):
    assert codec_module.MimiCodec is MimiCodec  # lazy re-export for class_path configs
    assert isinstance(codec, AudioCodec)
    assert isinstance(MimiCodec.from_model(mimi_model), AudioCodec)
    assert isinstance(KimiAudioCodec(), AudioCodec)
    assert (codec.vocab_size, codec.frame_rate) == (33 * 8, 12.5)
    small = ProsodyCodec(pitch_bins=16, energy_bins=4)
    assert small.vocab_size == 17 * 4
    noise = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.3
    t = small.encode(noise, SR)
    assert t.dtype == torch.int64 and 0 <= int(t.min()) and int(t.max()) < small.vocab_size


def test_token_layout_by_hand(codec):
    # token = pitch_bin * 8 + energy_bin: bin 1 of pitch = [60, 64.6) Hz, centre 62.2 Hz;
    # energy level 5 = [-28, -21) dBFS, centre -24.5; level 0 = silence
    d = codec.describe_tokens([0, 1 * 8 + 5, 1 * 8 + 5, 0])
    assert (d["frames"], d["active_frames"], d["voiced_frames"]) == (4, 2, 2)
    assert (d["lead_frames"], d["tail_frames"]) == (1, 1)
    assert d["f0_mean"] == pytest.approx(60 * 10 ** (0.5 / 32), rel=1e-6)
    assert d["energy_db"] == pytest.approx(-24.5) and d["f0_sd_st"] == 0.0


def test_clipped_sine_gives_its_pitch_and_top_energy(codec):
    t = np.arange(SR) / SR
    tokens = codec.encode(np.clip(5 * np.sin(2 * np.pi * 150 * t), -1, 1), SR)
    d = codec.describe_tokens(tokens)
    assert d["voiced_frames"] == d["frames"] == 13
    assert abs(12 * np.log2(d["f0_mean"] / 150)) < 0.7  # half a 1.25-semitone bin
    assert set((tokens % codec.energy_bins).tolist()) == {codec.energy_bins - 1}


@pytest.mark.parametrize(
    ("seconds", "frames"), [(0.1, (1, 2)), (1.0, (12, 13)), (3.3, (41, 42)), (60.0, (750, 750))]
)
def test_token_count_follows_duration(codec, seconds, frames):
    x = np.random.default_rng(1).standard_normal(int(seconds * SR)).astype(np.float32) * 0.1
    assert frames[0] <= len(codec.encode(x, SR)) <= frames[1]


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_any_input_rate(codec, tts, rate):
    from paras2s_pl.audio.io import resample

    wav, _ = tts.synthesize(TEXT, "neutral", "f4")
    ref = codec.describe_tokens(codec.encode(wav, SR))
    got = codec.describe_tokens(codec.encode(resample(wav, SR, rate), rate))
    assert abs(got["frames"] - ref["frames"]) <= 1
    assert abs(12 * np.log2(got["f0_mean"] / ref["f0_mean"])) < 0.3


# --------------------------------------------------------------------------- bad input
def test_silence_is_all_id_zero(codec):
    assert codec.encode(np.zeros(SR), SR).tolist() == [0] * 13


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_named(codec, bad):
    x = np.zeros(SR, np.float32)
    x[100] = bad
    with pytest.raises(AudioError, match="wav passed to ProsodyCodec.encode"):
        codec.encode(x, SR)
    with pytest.raises(ValueError, match=r"wavs\[1\]"):
        codec.encode_batch([np.zeros(SR), x], SR)


def test_invalid_token_ids_are_named(codec):
    with pytest.raises(ValueError, match=r"vocab_size=264: ids \[264, -1\] at positions \[1, 3\]"):
        codec.decode(torch.tensor([0, 264, 5, -1]), TEXT)
    with pytest.raises(ValueError, match="1-D integer"):
        check_tokens(torch.zeros(3), 10)
    with pytest.raises(ValueError, match="1-D integer"):
        check_tokens(torch.zeros(2, 3, dtype=torch.long), 10)


def test_decode_edge_cases_are_defined(codec, tts):
    assert codec.decode(torch.zeros(0, dtype=torch.long), TEXT)[0].shape == (0,)
    silent = codec.decode(torch.zeros(10, dtype=torch.long), TEXT)[0]
    assert silent.shape == (10 * HOP,) and not silent.any()
    tokens = codec.encode(tts.synthesize(TEXT, "happy", "f4")[0], SR)
    hums = [codec.decode(tokens, text)[0] for text in (None, "", "...", " ?! ")]
    assert all(np.array_equal(h, hums[0]) for h in hums) and hums[0].shape == (len(tokens) * HOP,)
    for text in ("你好世界", "Привет, как дела?", "Bonjour tout le monde"):  # English rules
        out = codec.decode(tokens, text)[0]
        assert out.size > 0 and np.isfinite(out).all() and np.abs(out).max() <= 1.0


def test_hum_carries_the_prosody(codec, tts):
    # measured: F0 -0.03 st, energy +1.2 dB (a steady tone has no quiet 10 ms frames),
    # duration +0.04 s (the input's last partial frame becomes a whole one)
    wav, _ = tts.synthesize(TEXT, "sad", "f4")
    a, b = summarize(wav, SR), summarize(codec.decode(codec.encode(wav, SR))[0], SR)
    assert abs(12 * np.log2(b.f0_mean / a.f0_mean)) < 1.0
    assert abs(b.energy_db - a.energy_db) < 2.5 and abs(b.duration - a.duration) < 0.09


# --------------------------------------------------------------------------- round trip
@pytest.mark.parametrize(("i", "style"), list(enumerate(labels.TTS_STYLES)))
def test_round_trip_keeps_prosody(round_trip, i, style):
    # measured over these 20 (style, speaker) pairs, worst case: F0 0.64 st (disgust f4),
    # F0 sd 0.74 st (excited m7), energy 2.2 dB (female: f1's voice), duration 2.1 %
    wav, tokens, out = round_trip(style, speaker_for(i, style))
    a, b = summarize(wav, SR), summarize(out, SR)
    assert abs(12 * np.log2(b.f0_mean / a.f0_mean)) < 1.25
    assert abs(b.f0_sd_st - a.f0_sd_st) < 1.25
    assert abs(b.energy_db - a.energy_db) < 4.0
    assert abs(b.duration / a.duration - 1) < 0.05
    assert out.size >= len(tokens) * HOP


def test_voice_follows_the_pitch_register(codec, round_trip):
    pick = lambda style, spk: codec.prosody_for(  # noqa: E731
        codec.describe_tokens(round_trip(style, spk)[1]), len(TEXT.split())
    )
    assert pick("male", None)[1] == "m1" and pick("surprised", "m6")[1] == "m1"
    assert pick("female", None)[1] == "f2" and pick("sad", "f4")[1] == "f2"
    child, speaker = pick("child", "f4")
    assert (speaker, child.shift) == ("f2", 1.3)
    # the tokens' zigzag finds the fear tremble for 9 of 12 speakers here (not m6, f1, f5)
    assert pick("fear", "f4")[0].tremble > 0 and pick("calm", "f4")[0].tremble == 0


def test_deterministic(codec, tts):
    wav, _ = tts.synthesize(TEXT, "sarcastic", "m7")
    t1, t2 = codec.encode(wav, SR), codec.encode(wav.copy(), SR)
    assert torch.equal(t1, t2)
    assert np.array_equal(codec.decode(t1, TEXT)[0], codec.decode(t2, TEXT)[0])
    assert np.array_equal(codec.decode(t1)[0], codec.decode(t1)[0])


def test_batched_equals_single(codec, tts):
    wavs = [tts.synthesize(TEXT, s, "f5")[0] for s in ("angry", "calm")]
    singles = [codec.encode(w, SR) for w in wavs]
    assert all(
        torch.equal(a, b) for a, b in zip(codec.encode_batch(wavs, SR), singles, strict=True)
    )
    outs = codec.decode_batch(singles, [TEXT, None])
    assert np.array_equal(outs[0][0], codec.decode(singles[0], TEXT)[0])
    assert np.array_equal(outs[1][0], codec.decode(singles[1])[0])
    with pytest.raises(ValueError, match="2 token sequences but 1 texts"):
        codec.decode_batch(singles, [TEXT])


def test_output_rate_is_configurable(tts):
    c24 = ProsodyCodec(sample_rate=24000)
    tokens = c24.encode(*tts.synthesize(TEXT, "neutral", "m6"))
    out, sr = c24.decode(tokens, TEXT)
    assert sr == 24000 and out.size >= len(tokens) * 1920


def test_synthesize_prosody_matches_presets(tts):
    for style, speaker in [("child", "m1"), ("fear", "f2"), ("sad", "m6")]:
        pro, spk = tts.prosody(style, speaker)
        assert np.array_equal(tts.synthesize_prosody(TEXT, pro, spk)[0],
                              tts.synthesize(TEXT, style, speaker)[0])  # fmt: skip
    with pytest.raises(ValueError, match="unknown speaker"):
        tts.synthesize_prosody(TEXT, pro, "nobody")


def test_calibration_inverts_monotonically():
    cal = CALIBRATION["f2"]
    assert cal.invert(150, 1.0, -30)[0] < cal.invert(250, 1.0, -30)[0]
    assert cal.invert(200, 0.5, -30)[1] < cal.invert(200, 2.0, -30)[1]
    assert cal.invert(200, 1.0, -35)[2] < cal.invert(200, 1.0, -22)[2]


def test_cli_round_trips_a_file(tmp_path, tts, capsys):
    import soundfile as sf

    sf.write(tmp_path / "in.wav", tts.synthesize(TEXT2, "cheerful", "f2")[0], SR)
    codec_module.main([str(tmp_path / "in.wav"), TEXT2, "--out", str(tmp_path / "out.wav")])
    assert sf.info(str(tmp_path / "out.wav")).duration > 2 and "tokens" in capsys.readouterr().out


# --------------------------------------------------------------------------- captions
CAPTION_SPEAKERS = ("m1", "f2", "m6", "f4")


@pytest.mark.integration  # 74 round trips + 148 captions: ~25 s
def test_round_trip_keeps_the_caption(round_trip):
    style_mod = pytest.importorskip("paras2s_pl.audio.style")
    cap = style_mod.ProsodyCaptioner()
    tone = voice = total = 0
    for style in labels.TTS_STYLES:
        for spk in (None,) if style in ("male", "female") else CAPTION_SPEAKERS:
            wav, _, out = round_trip(style, spk)
            a, b = cap.captions([wav, out], SR)
            tone, voice, total = tone + (a.tone == b.tone), voice + (a.voice == b.voice), total + 1
    # measured: tone 59/74, voice 73/74 (the miss: m1's child decodes as a woman). Tone
    # misses sit on the captioner's borders (calm/soft/serious/neutral), plus fear for m6.
    assert tone / total >= 0.65 and voice / total >= 0.9


def test_assistant_response_tones_keep_their_caption(round_trip):
    style_mod = pytest.importorskip("paras2s_pl.audio.style")
    cap = style_mod.ProsodyCaptioner()
    agree = 0
    for tone in labels.RESPONSE_TONES:
        wav, _, out = round_trip(tone, labels.ASSISTANT_SPEAKER, TEXT2)
        a, b = cap.captions([wav, out], SR)
        agree += a.tone == b.tone and a.voice == b.voice
    assert agree >= 6  # measured 8 of 8


@pytest.mark.integration  # ~3 s of synthesis
def test_stored_calibration_is_reproducible():
    assert calibrate_voice("f2") == CALIBRATION["f2"]


# --------------------------------------------------------------------------- Mimi
@pytest.mark.parametrize("k", [1, 2, 4])
def test_mimi_layout_and_round_trip(mimi_model, k):
    mimi = MimiCodec.from_model(mimi_model, num_codebooks=k)
    assert (mimi.vocab_size, mimi.frame_rate, mimi.sample_rate) == (64 * k, 12.5 * k, 24000)
    wav = np.random.default_rng(2).standard_normal(int(1.5 * SR)).astype(np.float32) * 0.1
    tokens = mimi.encode(wav, SR)
    assert tokens.dtype == torch.int64 and len(tokens) == 19 * k  # ceil(1.5 * 12.5) frames
    book = torch.arange(len(tokens)) % k
    assert torch.equal(tokens // 64, book)  # frame-major, codebook k offset by k * 64
    assert len(set((tokens % 64).tolist())) > 1  # not degenerate
    out, sr = mimi.decode(tokens, "text is ignored")
    assert sr == 24000 and out.shape == (19 * 1920,) and np.isfinite(out).all()
    assert all(torch.equal(a, b) for a, b in zip(mimi.encode_batch([wav, wav], SR),
                                                 [tokens, tokens], strict=True))  # fmt: skip


def test_mimi_rejects_misplaced_ids_and_bad_settings(mimi_model):
    mimi = MimiCodec.from_model(mimi_model, num_codebooks=2)
    with pytest.raises(ValueError, match="not a multiple of num_codebooks=2"):
        mimi.decode(torch.tensor([0, 64, 1]))
    with pytest.raises(ValueError, match=r"ids \[3\] at positions \[1\]"):
        mimi.decode(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="outside what the Mimi model offers"):
        MimiCodec.from_model(mimi_model, num_codebooks=5)
    with pytest.raises(ValueError, match="needs model="):
        _ = MimiCodec().vocab_size
    with pytest.raises(OSError, match="cannot load Mimi model"):
        _ = MimiCodec("/nonexistent/mimi-checkpoint").vocab_size
    assert MimiCodec.from_model(mimi_model).decode(torch.zeros(0, dtype=torch.long))[0].size == 0


# --------------------------------------------------------------------------- Kimi-Audio
def test_kimi_slot_errors_are_clear(tmp_path):
    kimi = KimiAudioCodec()
    assert (kimi.vocab_size, kimi.frame_rate, kimi.sample_rate) == (16384, 12.5, 24000)
    with pytest.raises(FileNotFoundError, match="tokenizer_path"):
        kimi.encode(np.zeros(SR, np.float32), SR)
    with pytest.raises(FileNotFoundError, match="detokenizer_path"):
        kimi.decode(torch.tensor([1, 2]))
    present = KimiAudioCodec(str(tmp_path), str(tmp_path))
    with pytest.raises(ImportError, match="kimia_infer"):
        present.encode(np.zeros(SR, np.float32), SR)
    with pytest.raises(ValueError, match="vocab_size=16384"):
        present.decode(torch.tensor([16384]))
