"""Style captioners ``S``: describe HOW an utterance is spoken, in words a judge can read.

The judge (paper §A.11.5) reads the response's "description of the speaking tone". Three
backends share one protocol, :class:`StyleCaptioner`:

* :class:`ProsodyCaptioner` (embedded default, offline): Praat measurements → a tone word,
  a voice word and a short description, by the documented rules below.
* :class:`AudioLLMCaptioner`: Audio-Reasoner / any Qwen2-Audio checkpoint via
  ``transformers``; the tone is the text inside the last ``<RESPONSE>…</RESPONSE>``.
* :class:`OpenAIAudioCaptioner`: any OpenAI-compatible chat endpoint that takes
  ``input_audio`` parts, same prompt and parsing.

:class:`ProsodyCaptioner` measures pitch (mean F0 in semitones from the reference of the
voice's register: child / female / male, estimated from F0 and formants, so a happy man
and a sad woman are not both "mid"), melody (F0 sd, st), pace (syllable nuclei per
second), loudness (dBFS), tremor and word gaps, names the level of each ("high pitch,
lively melody, fast, loud") and picks a tone word by the ordered rules of
:func:`tone_word`. Every threshold is a named constant below whose comment quotes
``python benchmarks/calibrate_style.py`` (every eSpeak preset × 12 speakers × three
sentences and a three-sentence reply; per-style means, male / female speakers).
Loudness is peak-relative (the TTS sets peaks by style): it holds in the mini world, not
for arbitrary recordings. Known limits: speakers' own pitch offsets (±2 st) blur calm /
serious across voices; 5 of 912 calibration utterances get the wrong register.

In code: ``ProsodyCaptioner().describe([wav], sample_rate)`` →
``["cheerful (female voice; high pitch, lively melody, fast, loud)"]``.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import parselmouth
from parselmouth.praat import call
from scipy.signal import find_peaks

from paras2s_pl.audio.io import encode_audio, resample, to_mono
from paras2s_pl.audio.prosody import SILENCE_DB, Tracks, frame_tracks, semitones, summarize
from paras2s_pl.llm import make_openai_client

log = logging.getLogger(__name__)

RATE = 16000  # analysis and model input rate
MIN_SECONDS = 0.3  # shorter input: "unknown" (too little speech for a pitch/rate estimate)
#: Tone words of the prosody captioner (model captioners keep the model's own words).
TONE_WORDS = tuple(
    "cheerful excited calm soft neutral serious sad angry fearful sarcastic disgusted".split()
) + ("silent", "unknown")
VOICE_WORDS = ("child", "female", "male", "unknown")

# ---- register (voice) ------------------------------------------------------------------
# Formants are medians over voiced frames; the child voice raises them (and F0) 30-60 %.
# child_score = log2(f0/250) + 8 log2(F1/600) + 4 log2(F4/4000): child min +1.01 (m7),
# adult max +0.44 (surprised f3); F1 alone overlaps (child ≥ 601 Hz, adults ≤ 624 Hz).
CHILD_SCORE = 0.67
# gender_score = log2(f0/134) + 6 log2(F3/2750) + 4 log2(F4/3750): men -2.30..+0.28,
# women +0.07..+4.04. F0 alone confuses a surprised man (133-156 Hz) with a sad woman
# (130-164 Hz); 5 of 912 utterances stay wrong (surprised m2/m5, sad/disgust f1; no test speaker).
GENDER_SCORE = 0.22
# F0 of each register's neutral preset (mean over speakers; each speaker is ±2 st off).
REGISTER_REF_HZ = {"male": 99.0, "female": 190.0, "child": 300.0}  # child preset 280/321
# ---- pitch: semitones from the register reference -----------------------------------------
# sad -4.7/-3.6, serious -3.3/-3.3, disgust -3.6/-3.2, empathetic -2.5, calm -2.2,
# neutral 0/0, gentle +.5, angry +1.8, fear +2.8, cheerful +3.5, happy +4.3,
# surprised +5.6/+6.8, excited +6.0/+5.9
VERY_LOW_ST, LOW_ST, HIGH_ST, VERY_HIGH_ST = -4.0, -1.5, 1.5, 5.0
# Very loud is angry unless surprised-high: angry ≤ +4.5 (f3), loud surprised/excited
# ≥ +4.7 but for two excited f1 utterances at +3.9.
ANGRY_MAX_ST = 4.6
# Disgust: low and unhurried but with melody (sd 1.6) unlike the soft tones; their pitch
# (-2.5..-2.2; the assistant voice f2 -2.4..-1.9) stays above this.
DISGUST_MAX_ST = -2.5
# Serious: low and steady (-3.3, sd .85) vs calm/empathetic/apologetic (-2.5..-2.2, sd
# 1.08-1.27). Assistant (f2) replies: serious ≤ -2.9, sd .81-1.04; calm ≥ -2.4, sd ≥ 1.13.
SERIOUS_MAX_ST, SERIOUS_SD_ST = -2.6, 1.1
# ---- melody: F0 standard deviation, semitones ---------------------------------------------
# sad .64/.69, serious .85, fear 1.0, calm 1.08, empathetic 1.17, apologetic 1.27,
# gentle 1.38, adult 1.51, neutral 1.58, disgust 1.64/1.56, sincere 1.75, cheerful 1.93,
# angry 2.0, happy 2.1, surprised 2.1, excited 2.15, sarcastic 2.91/3.14
FLAT_ST, STEADY_ST, NATURAL_ST, LIVELY_ST, SWINGS_ST = 0.85, 1.2, 1.5, 1.65, 2.2
# ---- pace: syllable nuclei per active second (Praat intensity, 32 ms window) -------------
# sarcastic 3.4/3.1, sad 3.7/3.5, disgust 3.8/3.6, empathetic 4.2/4.0, gentle 4.3/4.2,
# calm 4.5/4.2, sincere 4.7/4.5, neutral 5.1/4.9, cheerful 5.5/5.3, excited 5.9/5.7,
# angry 6.2/6.0
SLOW_RATE, UNHURRIED_RATE, FAST_RATE = 3.8, 4.4, 5.15
# ---- loudness: mean dBFS of active frames -------------------------------------------------
# sad -35.4/-33.6, apologetic -32.6/-31.2, empathetic -32.5/-31.1, calm -31.5/-29.9,
# gentle -31.3/-29.9, fear -30.6/-29.6, neutral -29.4/-28.1, cheerful -27.5/-26.5,
# happy -26.8/-25.7, excited -25.6/-24.8, surprised -25.2/-24.5, angry -21.2/-20.9
VERY_QUIET_DB, QUIET_DB, LOUD_DB, VERY_LOUD_DB = -33.0, -30.3, -26.5, -23.0
CALM_DB = -29.0  # unhurried and quieter than this → calm (gentle vs neutral for f2)
# ---- voice quality ------------------------------------------------------------------------
TREMOR = 0.16  # periodic F0 wobble (see measure): fear .18-.42, every other preset ≤ .135
WORD_GAPS = 1.0  # per second (see measure): sarcastic 10th pct 1.15; replies ≤ .84


@dataclass(frozen=True)
class Caption:
    """What a captioner heard: ``str(caption)`` is the text the judge reads.

    ``tone`` is a word of :data:`TONE_WORDS` for the prosody captioner; model captioners
    put the model's own 1-2 words there (or ``unknown``). ``voice`` is a word of
    :data:`VOICE_WORDS`; ``description`` the measured facts (or why it is unknown).
    """

    tone: str
    voice: str = "unknown"
    description: str = ""
    features: dict[str, Any] | None = None

    def __str__(self) -> str:
        parts = ([f"{self.voice} voice"] if self.voice != "unknown" else []) + (
            [self.description] if self.description else []
        )
        return f"{self.tone} ({'; '.join(parts)})" if parts else self.tone


@runtime_checkable
class StyleCaptioner(Protocol):
    """Describes how each waveform is spoken."""

    def captions(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[Caption]:
        """One :class:`Caption` per waveform (mono or ``(frames, channels)``)."""
        ...

    def describe(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[str]:
        """``[str(c) for c in self.captions(wavs, sample_rate)]``."""
        ...


def guard(wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray | None, Caption | None]:
    """Mono 16 kHz audio, or the caption that bad input gets instead of a crash.

    Non-finite samples and input shorter than :data:`MIN_SECONDS` give ``unknown`` with
    the reason; input with no frame above the silence floor gives ``silent``.
    """
    wav = to_mono(np.asarray(wav))
    seconds = wav.size / sample_rate
    if not np.isfinite(wav).all():
        bad = int((~np.isfinite(wav)).sum())
        return None, Caption("unknown", description=f"unusable audio: {bad} NaN/inf samples")
    if seconds < MIN_SECONDS:
        return None, Caption("unknown", description=f"too short: {seconds:.2f} s < {MIN_SECONDS} s")
    x = resample(wav, sample_rate, RATE)
    if 20 * np.log10(max(float(np.abs(x).max()), 1e-10)) <= SILENCE_DB:
        return None, Caption("silent", description=f"no sound above {SILENCE_DB:.0f} dBFS")
    return x, None


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True))


def measure(x: np.ndarray) -> dict[str, Any]:
    """Features of 16 kHz mono audio: :class:`ProsodyFeatures` plus the voice measures."""
    feats = summarize(x, RATE).as_dict()
    if feats["silent"]:
        return feats
    t = frame_tracks(x, RATE, hop=0.01)
    snd = parselmouth.Sound(x.astype(np.float64), RATE)
    active = max(feats["active_seconds"], t.hop)
    feats["syllable_rate"] = _nuclei(snd, t) / active
    feats["word_gaps_per_s"] = _word_gaps(t) / active
    feats.update(_tremor(t))
    feats.update(_formants(snd, t))
    return feats


def _nuclei(snd: parselmouth.Sound, t: Tracks) -> int:
    """Syllable nuclei: voiced peaks of Praat's intensity (32 ms window), ≥ 2 dB prominent.

    ``prosody.rate`` peaks 10 ms energy frames, which ripple with the pitch pulses of a low
    (70 Hz) voice and overcount slow male speech.
    """
    inten = snd.to_intensity(minimum_pitch=100.0, time_step=0.01)
    level = inten.values[0]
    voiced_at = np.interp(inten.xs(), (np.arange(t.f0.size) + 0.5) * t.hop, t.voiced) > 0.5
    peaks, _ = find_peaks(level, prominence=2.0)
    return sum(1 for p in peaks if voiced_at[p] and level[p] > level.max() - 25)


def _word_gaps(t: Tracks) -> int:
    """Internal silences of 50-150 ms (35 dB under the loudest frame); longer are breaks."""
    low, n = t.energy_db < t.energy_db.max() - 35, t.energy_db.size
    return sum(1 for a, b in _runs(low) if 5 <= b - a <= 15 and a > 0 and b < n)


def _tremor(t: Tracks) -> dict[str, float]:
    """Periodicity (5-10 Hz autocorrelation) × depth (median, st) of the F0 wobble.

    The wobble is the semitone contour minus its 150 ms moving average. eSpeak's irregular
    "flutter" (m1, f1) wobbles as deep as a fearful voice but not periodically; flat
    contours can look periodic but are shallow: only the product separates them.
    """
    st, wobble = semitones(np.where(t.voiced, t.f0, 1.0)), []
    for a, b in _runs(t.voiced):
        if b - a >= 20:
            seg = np.pad(st[a:b], 7, mode="edge")
            wobble.append(st[a:b] - np.convolve(seg, np.ones(15) / 15, mode="valid"))
    energy = sum(float(w @ w) for w in wobble) or 1.0
    r = {lag: sum(float(w[lag:] @ w[:-lag]) for w in wobble) / energy for lag in range(5, 21)}
    periodicity = max((r[lag] - r[round(lag / 2)]) / 2 for lag in range(10, 21))
    depth = float(np.median(np.abs(np.concatenate(wobble)))) if wobble else 0.0
    return {
        "tremor_periodicity": periodicity,
        "tremor_depth_st": depth,
        "tremor": periodicity * depth,
    }


def _formants(snd: parselmouth.Sound, t: Tracks) -> dict[str, float]:
    """Median F1-F4 (Hz) over voiced frames, 0 when undefined.

    20 ms steps over at most the first 8 s: a voice's register does not drift, and Burg
    analysis is the costliest step of :func:`measure`.
    """
    head = snd.extract_part(0.0, 8.0) if snd.duration > 8.0 else snd
    fm = head.to_formant_burg(time_step=0.02, max_number_of_formants=5, maximum_formant=5500)
    on = np.interp(fm.xs(), (np.arange(t.f0.size) + 0.5) * t.hop, t.voiced) > 0.5
    out = {}
    for k in range(1, 5):  # Praat marks an undefined formant 0 (or NaN)
        m = call(fm, "To Matrix", k).values[0][on]
        out[f"f{k}_hz"] = float(np.nanmedian(m[m > 0])) if (m > 0).any() else 0.0
    return out


def child_score(f: dict[str, Any]) -> float:
    """Above :data:`CHILD_SCORE` for a child's voice (see the constant's comment)."""
    return float(
        np.log2(f["f0_mean"] / 250) + 8 * np.log2(f["f1_hz"] / 600) + 4 * np.log2(f["f4_hz"] / 4000)
    )


def gender_score(f: dict[str, Any]) -> float:
    """Above :data:`GENDER_SCORE` for a woman's voice (see the constant's comment)."""
    return float(
        np.log2(f["f0_mean"] / 134)
        + 6 * np.log2(f["f3_hz"] / 2750)
        + 4 * np.log2(f["f4_hz"] / 3750)
    )


def register(f: dict[str, Any]) -> str:
    """``child``, ``female`` or ``male`` from F0 and formants; ``unknown`` if unvoiced."""
    if min(f["f0_mean"], f["f1_hz"], f["f3_hz"], f["f4_hz"]) <= 0:
        return "unknown"
    if child_score(f) > CHILD_SCORE:
        return "child"
    return "female" if gender_score(f) > GENDER_SCORE else "male"


#: Description words of each measure: ``words[i]`` for the first ``value < cuts[i]``.
LEVELS = {
    "pitch": (
        (VERY_LOW_ST, LOW_ST, HIGH_ST, VERY_HIGH_ST),
        ("very low pitch", "low pitch", "mid pitch", "high pitch", "very high pitch"),
    ),
    "melody": (
        (FLAT_ST, STEADY_ST, NATURAL_ST, SWINGS_ST),
        ("flat melody", "steady melody", "natural melody", "lively melody", "exaggerated swings"),
    ),
    "pace": (
        (SLOW_RATE, UNHURRIED_RATE, FAST_RATE),
        ("slow", "unhurried", "moderate pace", "fast"),
    ),
    "loudness": (
        (VERY_QUIET_DB, QUIET_DB, LOUD_DB, VERY_LOUD_DB),
        ("very quiet", "quiet", "moderate volume", "loud", "very loud"),
    ),
}


def _level(value: float, cuts: Sequence[float], words: Sequence[str]) -> str:
    """``words[i]`` for the first ``i`` with ``value < cuts[i]``; else the last word."""
    return next((w for c, w in zip(cuts, words, strict=False) if value < c), words[-1])


def tone_word(rel: float, sd: float, rate: float, db: float, trembling: bool, pauses: bool) -> str:
    """The module's tone rules (first match wins) on pitch, melody, pace and loudness."""
    slow = rate < SLOW_RATE
    rules = (
        ("angry", db >= VERY_LOUD_DB and rel < ANGRY_MAX_ST),
        ("fearful", trembling),
        ("sarcastic", sd >= SWINGS_ST and (slow or pauses)),
        ("excited", rel >= VERY_HIGH_ST and sd >= LIVELY_ST),
        ("cheerful", rel >= HIGH_ST and sd >= NATURAL_ST),
        ("sad", sd < FLAT_ST and (slow or db < VERY_QUIET_DB)),
        (
            "disgusted",
            rel <= DISGUST_MAX_ST and rate < UNHURRIED_RATE and STEADY_ST - 0.05 <= sd < SWINGS_ST,
        ),
        ("serious", sd < FLAT_ST or (rel <= SERIOUS_MAX_ST and sd < SERIOUS_SD_ST)),
        ("soft", db < QUIET_DB and rel < HIGH_ST),
        ("calm", rel <= LOW_ST or (rate < UNHURRIED_RATE and db < CALM_DB)),
    )
    return next((tone for tone, hit in rules if hit), "neutral")


def describe_features(f: dict[str, Any]) -> Caption:
    """Caption :func:`measure`'s features: register, levels, tone word (module rules)."""
    if f["silent"]:
        return Caption("silent", description=f"no frame above {SILENCE_DB:.0f} dBFS", features=f)
    voice = register(f)
    if voice == "unknown":
        return Caption("unknown", description="no voiced speech found", features=f)
    rel = float(12 * np.log2(f["f0_mean"] / REGISTER_REF_HZ[voice]))
    sd, rate, db = f["f0_sd_st"], f["syllable_rate"], f["energy_db"]
    trembling, pauses = bool(f["tremor"] >= TREMOR), bool(f["word_gaps_per_s"] >= WORD_GAPS)
    values = {"pitch": rel, "melody": sd, "pace": rate, "loudness": db}
    words = [_level(values[k], cuts, names) for k, (cuts, names) in LEVELS.items()]
    words += ["trembling"] * trembling + ["drawn-out pauses"] * pauses
    tone = tone_word(rel, sd, rate, db, trembling, pauses)
    return Caption(tone, voice, ", ".join(words), dict(f, pitch_rel_st=rel, register=voice))


class _Captioner:
    """``describe`` in terms of ``captions`` (shared by every backend)."""

    def captions(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[Caption]:
        raise NotImplementedError

    def describe(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[str]:
        """``[str(c) for c in self.captions(wavs, sample_rate)]``."""
        return [str(c) for c in self.captions(wavs, sample_rate)]


class ProsodyCaptioner(_Captioner):
    """Offline captioner: Praat prosody → tone, voice and description (module rules)."""

    def captions(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[Caption]:
        """One caption per waveform; bad input gives ``silent``/``unknown``, never raises."""
        out = []
        for wav in wavs:
            x, bad = guard(wav, sample_rate)
            out.append(bad if bad is not None else describe_features(measure(x)))
        return out


# ----------------------------------------------------------------- pair separation (eval)
#: Words that count as evidence for each query style, as "tone words | voice words |
#: description phrases": a tone or voice match weighs 2, each phrase 1 (:func:`score_for`).
_EVIDENCE = {
    "happy": "cheerful excited | | high pitch, very high pitch, lively melody, fast, loud",
    "surprised": "excited cheerful | | very high pitch, high pitch, lively melody, loud, very loud",
    "sad": "sad soft calm | | low pitch, very low pitch, flat melody, slow, quiet, very quiet",
    "angry": "angry | | very loud, loud, fast",
    "fear": "fearful | | trembling, high pitch",
    "disgust": "disgusted sad serious | | low pitch, very low pitch, slow",
    "sincere": "neutral calm cheerful soft | | natural melody, steady melody, moderate pace",
    "sarcastic": "sarcastic | | exaggerated swings, slow, drawn-out pauses",
    "child": "| child |",
    "adult": "| male female |",
    "male": "| male |",
    "female": "| female |",
}
STYLE_EVIDENCE: dict[str, dict[str, frozenset[str]]] = {
    style: {
        "tone": frozenset(tone.split()),
        "voice": frozenset(voice.split()),
        "phrase": frozenset(p.strip() for p in phrases.split(",") if p.strip()),
    }
    for style, (tone, voice, phrases) in ((k, v.split("|")) for k, v in _EVIDENCE.items())
}
#: Response-tone families: a caption agrees with a reference tone when both are in one.
TONE_FAMILIES = {
    "upbeat": ({"cheerful", "excited"}, {"cheerful", "excited"}),
    "soft": ({"calm", "empathetic", "gentle", "apologetic"}, {"calm", "soft", "sad"}),
    "plain": ({"serious", "neutral"}, {"serious", "neutral"}),
}  # name: (reference response tones, caption tone words)


def score_for(caption: Caption, style: str) -> int:
    """Evidence for ``style`` in the words of ``caption`` (see :data:`STYLE_EVIDENCE`)."""
    ev = STYLE_EVIDENCE[style]
    phrases = set(caption.description.split(", "))
    return (
        2 * (caption.tone in ev["tone"])
        + 2 * (caption.voice in ev["voice"])
        + len(phrases & ev["phrase"])
    )


def predict_pair(a: Caption, b: Caption, styles: tuple[str, str]) -> tuple[str, str] | None:
    """Which of the two ``styles`` each caption carries; ``None`` when the words tie."""
    s, t = styles
    margin = score_for(a, s) + score_for(b, t) - score_for(a, t) - score_for(b, s)
    return None if margin == 0 else (s, t) if margin > 0 else (t, s)


def tone_family(word: str, reference: bool = False) -> str:
    """Family of a caption tone word (or of a reference response tone); ``other`` if none."""
    return next((n for n, f in TONE_FAMILIES.items() if word in f[0 if reference else 1]), "other")


# ------------------------------------------------------------------- model captioners
SYSTEM_PROMPT = (
    "You are an expert in paralinguistics. Listen to the speech and reason step by step "
    "about how it is spoken: pitch, pitch movement, speed, loudness, voice quality and the "
    "emotion they convey. Then give the speaking tone in one or two words inside "
    "<RESPONSE></RESPONSE>, for example <RESPONSE>cheerful</RESPONSE>."
)
USER_PROMPT = "Describe the speaking tone of this audio."
_RESPONSE = re.compile(r"<RESPONSE>(.*?)</RESPONSE>", re.IGNORECASE | re.DOTALL)


def chat_messages(audio_part: dict[str, Any]) -> list[dict[str, Any]]:
    """System prompt + one user turn: the audio part, then :data:`USER_PROMPT`."""
    user = [audio_part, {"type": "text", "text": USER_PROMPT}]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_tone(text: str) -> str | None:
    """The stripped, lower-cased text inside the LAST ``<RESPONSE>…</RESPONSE>``; else None."""
    found = _RESPONSE.findall(text or "")
    tone = found[-1].strip().lower() if found else ""
    return tone or None


class _PromptedCaptioner(_Captioner):
    """Guard the input, ask a model, parse ``<RESPONSE>``; count fallbacks to ``unknown``."""

    def __init__(self) -> None:
        self.fallbacks = 0  # outputs without a usable <RESPONSE> tag, captioned "unknown"

    def _generate(self, wavs: list[np.ndarray]) -> list[str]:
        raise NotImplementedError

    def captions(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[Caption]:
        """Bad input is captioned without calling the model (see :func:`guard`)."""
        guarded = [guard(w, sample_rate) for w in wavs]
        good = [x for x, bad in guarded if bad is None]
        texts = iter(self._generate(good) if good else [])
        out = []
        for _, bad in guarded:
            if bad is not None:
                out.append(bad)
                continue
            text = next(texts)
            tone = parse_tone(text)
            if tone is None:
                self.fallbacks += 1
                log.warning("no <RESPONSE> tag in model output (%d so far)", self.fallbacks)
            out.append(Caption(tone or "unknown", features={"raw_output": text}))
        return out


class AudioLLMCaptioner(_PromptedCaptioner):
    """Audio-Reasoner (``zhifeixie/Audio-Reasoner``) or any Qwen2-Audio model, greedy.

    Input beyond 30 s is cut by the Whisper feature extractor (the model's window).
    """

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str = "float32",
        max_new_tokens: int = 1024,
        batch_size: int = 4,
    ) -> None:
        """``model``: local path or hub id, loaded on first use."""
        super().__init__()
        self.model_name, self.device, self.dtype = model, device, dtype
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.model: Any = None
        self.processor: Any = None

    @classmethod
    def from_objects(cls, model: Any, processor: Any, **kwargs: Any) -> AudioLLMCaptioner:
        """Wrap an already built model and processor (tests, notebooks)."""
        self = cls(model="<in-memory>", **kwargs)
        self.model, self.processor = model.eval(), processor
        return self

    def _load(self) -> None:
        if self.model is None:
            import torch
            from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

            self.processor = AutoProcessor.from_pretrained(self.model_name)
            self.model = Qwen2AudioForConditionalGeneration.from_pretrained(
                self.model_name, dtype=getattr(torch, self.dtype)
            ).eval()
        self.model.to(self.device)
        self.processor.tokenizer.padding_side = "left"  # generation continues on the right

    def _generate(self, wavs: list[np.ndarray]) -> list[str]:
        import torch

        self._load()
        messages = chat_messages({"type": "audio", "audio": "input"})
        prompt = self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        texts: list[str] = []
        for i in range(0, len(wavs), self.batch_size):
            batch = wavs[i : i + self.batch_size]
            inputs = self.processor(
                text=[prompt] * len(batch),
                audio=batch,
                sampling_rate=RATE,
                return_tensors="pt",
                padding=True,
            ).to(self.device)
            with torch.inference_mode():
                out = self.model.generate(
                    **inputs, do_sample=False, max_new_tokens=self.max_new_tokens
                )
            new = out[:, inputs["input_ids"].shape[1] :]
            texts += self.processor.tokenizer.batch_decode(new, skip_special_tokens=True)
        return texts


class OpenAIAudioCaptioner(_PromptedCaptioner):
    """An OpenAI-compatible audio chat endpoint (OpenAI, vLLM …), temperature 0.

    The key is read from the environment variable ``api_key_env`` (never logged); a
    self-hosted ``base_url`` without a key gets the placeholder ``EMPTY``. Retries on
    429/5xx/timeouts are the ``openai`` client's own (``max_retries``, backoff).
    """

    def __init__(
        self,
        model: str = "gpt-4o-audio-preview",
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 3,
    ) -> None:
        super().__init__()
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.timeout, self.max_retries = timeout, max_retries
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The ``openai.OpenAI`` client, made on first use."""
        if self._client is None:
            self._client = make_openai_client(
                self.base_url, self.api_key_env, self.timeout, self.max_retries
            )
        return self._client

    def _generate(self, wavs: list[np.ndarray]) -> list[str]:
        texts = []
        for x in wavs:
            data = base64.b64encode(encode_audio(x, RATE, "wav")).decode("ascii")
            reply = self.client.chat.completions.create(
                model=self.model,
                temperature=0,
                messages=chat_messages(
                    {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
                ),
            )
            texts.append(reply.choices[0].message.content or "")
        return texts
