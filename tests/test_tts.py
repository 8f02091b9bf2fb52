"""Tests for the offline eSpeak TTS: presets must be measurably different (praat), the
output well-formed and deterministic, and bad input rejected with a helpful ValueError.

Margins: each threshold below is about half of the effect measured (as a ratio) on the
sentence ``TEXT`` with espeakng-loader's eSpeak NG 1.52; the measured value is noted next
to it. eSpeak is rule-based and the output is deterministic, so the numbers only move if
the presets, the eSpeak version or praat's pitch tracker change.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading

import numpy as np
import pytest

import paras2s_pl.audio.tts as tts_module
from paras2s_pl.audio.tts import (
    STYLE_INSTRUCTIONS,
    STYLE_PRESETS,
    TTS,
    EspeakTTS,
    OpenAITTS,
    main,
)
from paras2s_pl.data import labels

parselmouth = pytest.importorskip("parselmouth")

TEXT = "I can't believe you finished the whole project before lunch today."


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    return EspeakTTS()


@pytest.fixture(scope="module")
def measure(tts):
    """Cached ``(style, speaker) -> dict(f0, f0_sd, dur, rms, peak)`` on ``TEXT``."""
    cache: dict[tuple[str, str | None], dict[str, float]] = {}

    def _measure(style: str, speaker: str | None = None) -> dict[str, float]:
        if (style, speaker) not in cache:
            wav, sr = tts.synthesize(TEXT, style, speaker)
            snd = parselmouth.Sound(wav.astype(np.float64), sr)
            f0 = snd.to_pitch(time_step=0.01, pitch_floor=60, pitch_ceiling=600)
            f0 = f0.selected_array["frequency"]
            f0 = f0[f0 > 0]  # voiced frames only
            cache[style, speaker] = {
                "f0": float(f0.mean()),
                "f0_sd": float(f0.std()),
                "dur": wav.size / sr,
                "rms": float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))),
                "peak": float(np.abs(wav).max()),
            }
        return cache[style, speaker]

    return _measure


def test_protocol_and_tables_cover_every_label(tts):
    assert isinstance(tts, TTS) and isinstance(OpenAITTS(), TTS)
    assert set(STYLE_PRESETS) == set(labels.TTS_STYLES)
    assert set(STYLE_INSTRUCTIONS) == set(labels.TTS_STYLES)


@pytest.mark.parametrize("style", labels.TTS_STYLES)
def test_every_style_gives_valid_audio(tts, style):
    wav, sr = tts.synthesize("Hello, how are you today?", style)
    assert sr == 22050
    assert wav.dtype == np.float32 and wav.ndim == 1 and wav.size > sr // 4
    assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0


@pytest.mark.parametrize("speaker", ["m1", "f1", "m6", "f4"])
def test_child_is_higher_than_adult_for_the_same_speaker(measure, speaker):
    # measured child/adult mean F0: 3.0x for male speakers (m1, m6), 1.8x for female (f1, f4)
    assert measure("child", speaker)["f0"] > 1.4 * measure("adult", speaker)["f0"]


def test_child_is_higher_than_any_adult_woman(measure):
    # measured: child by m1 (lowest child voice) 260 Hz; highest neutral woman f3 220 Hz
    women = [s for s in labels.all_speakers() if labels.speaker_gender(s) == "female"]
    highest_woman = max(measure("neutral", s)["f0"] for s in women)
    assert measure("child", "m1")["f0"] > 1.08 * highest_woman


def test_female_is_higher_than_male(measure):
    # measured: female (default f1) 187 Hz vs male (default m1) 86 Hz, 2.2x
    assert measure("female")["f0"] > 1.5 * measure("male")["f0"]


def test_happy_is_higher_and_wider_than_sad(measure):
    happy, sad = measure("happy"), measure("sad")
    assert happy["f0"] > 1.3 * sad["f0"]  # measured 250 vs 147 Hz, 1.7x
    assert happy["f0_sd"] > 2.5 * sad["f0_sd"]  # measured 28 vs 5 Hz, 5.6x


def test_angry_is_faster_and_louder_than_sad(measure):
    angry, sad = measure("angry"), measure("sad")
    assert angry["dur"] < 0.75 * sad["dur"]  # measured 2.7 vs 5.2 s, 0.52x
    assert angry["rms"] > 2.5 * sad["rms"]  # measured 0.196 vs 0.038, 5.2x
    assert angry["peak"] > measure("neutral")["peak"] > sad["peak"]  # 0.95 > 0.5 > 0.28


def test_sarcastic_differs_from_sincere(measure):
    sarcastic, sincere = measure("sarcastic"), measure("sincere")
    assert sarcastic["dur"] > 1.25 * sincere["dur"]  # measured 6.0 vs 3.9 s, 1.55x
    assert sarcastic["f0_sd"] > 1.3 * sincere["f0_sd"]  # measured 32 vs 18 Hz, 1.75x


def test_deterministic_regardless_of_call_history(tts):
    first, _ = tts.synthesize(TEXT, "fear", "f2")
    tts.synthesize("Something else entirely, said loudly!", "angry", "m3")
    again, _ = tts.synthesize(TEXT, "fear", "f2")
    np.testing.assert_array_equal(first, again)


def _child_synth(_: int) -> bytes:
    return EspeakTTS().synthesize(TEXT, "happy", "f5")[0].tobytes()


def test_same_audio_from_threads_and_forked_processes(tts):
    ref = tts.synthesize(TEXT, "happy", "f5")[0].tobytes()
    out: list[bytes] = []
    threads = [threading.Thread(target=lambda: out.append(_child_synth(0))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [ref] * 4
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(_child_synth, range(2)) == [ref, ref]


def test_resampling_to_16k(tts):
    wav22, sr22 = tts.synthesize(TEXT, "neutral", "m2")
    wav16, sr16 = EspeakTTS(sample_rate=16000).synthesize(TEXT, "neutral", "m2")
    assert (sr22, sr16) == (22050, 16000)
    # trimming runs after resampling, so allow 1 % for a few edge samples
    assert wav16.size / wav22.size == pytest.approx(16000 / 22050, rel=0.01)


def test_speakers_sound_different(tts):
    wavs = {
        s: tts.synthesize("Good morning, everyone.", "neutral", s)[0] for s in labels.all_speakers()
    }
    digests = {w.tobytes() for w in wavs.values()}
    assert len(digests) == len(wavs)


@pytest.mark.parametrize("text", ["", "   ", "?!..."])
def test_rejects_text_without_words(tts, text):
    with pytest.raises(ValueError, match="no letters or digits"):
        tts.synthesize(text)


def test_rejects_unknown_style_and_speaker(tts):
    with pytest.raises(ValueError, match=r"unknown style 'whispery'.*'happy'"):
        tts.synthesize("Hello.", "whispery")
    with pytest.raises(ValueError, match=r"unknown speaker 'm99'.*'m1'"):
        tts.synthesize("Hello.", "neutral", "m99")


def test_rejects_gender_speaker_mismatch(tts):
    with pytest.raises(ValueError, match=r"'male'.*'f1' is female"):
        tts.synthesize("Hello.", "male", "f1")
    with pytest.raises(ValueError, match=r"'female'.*'m2' is male"):
        tts.synthesize("Hello.", "female", "m2")
    tts.synthesize("Hello.", "male", "m2")  # matching gender is fine


def test_missing_espeak_names_both_install_options(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import now raises ImportError
    monkeypatch.setattr(tts_module, "find_library", lambda name: None)
    with pytest.raises(ImportError, match=r"espeakng-loader.*libespeak-ng1"):
        tts_module._locate_espeak()


def test_openai_slot_is_explicitly_unimplemented():
    with pytest.raises(NotImplementedError, match="EspeakTTS"):
        OpenAITTS().synthesize("Hello.", "happy")


def test_cli_writes_wav(tmp_path):
    sf = pytest.importorskip("soundfile")
    out = tmp_path / "x.wav"
    main(["Hello there.", "--style", "happy", "--speaker", "m1", "--out", str(out)])
    wav, sr = sf.read(out)
    assert sr == 22050 and wav.size > 0
