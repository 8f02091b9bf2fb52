"""Audio codecs (the paper's ρ): waveforms ↔ the LM's audio-token stream, and back.

Every codec implements :class:`AudioCodec` (defined in :mod:`paras2s_pl.audio.codec_base`,
importable from here): ``encode`` turns mono audio at any rate into a 1-D ``LongTensor`` of
ids in ``[0, vocab_size)`` at ``frame_rate`` tokens per second; ``decode`` turns ids (plus,
for codecs that need it, the text stream) into ``(wav, sr)``. Backends: :class:`ProsodyCodec`
here (embedded default, no weights), and ``MimiCodec`` / ``KimiAudioCodec`` in
:mod:`paras2s_pl.audio.neural_codec` (also importable from here).

**ProsodyCodec token layout.** One token per 80 ms (12.5 Hz, Kimi-Audio's tokenizer
rate), ``token = pitch_bin * energy_bins + energy_bin``:

- ``pitch_bin`` 0 = unvoiced; ``1..pitch_bins`` = log-F0 in equal log steps over
  [60, 600] Hz (32 bins: 1.25 semitones each). A frame is voiced when at least half of its
  eight 10 ms Praat frames are; its F0 is their median.
- ``energy_bin`` 0 = silence (frame RMS ≤ -60 dBFS, :data:`prosody.SILENCE_DB`);
  ``1..energy_bins-1`` = 7 dB steps over [-56, -7] dBFS (open at both ends).
- vocab_size = ``(pitch_bins + 1) * energy_bins`` (defaults 33 * 8 = 264); id 0 = silence.

Decoding speaks the text stream with eSpeak NG in the prosody the tokens carry (see
:meth:`ProsodyCodec.decode`); the measured-Hz/dB → eSpeak-parameter maps are fitted by
:func:`calibrate_voice` and stored in :mod:`paras2s_pl.audio.codec_calibration`.

Run ``python -m paras2s_pl.audio.codec in.wav "the text" --out out.wav`` to round-trip a
file; ``python -m paras2s_pl.audio.codec --calibrate m1`` re-measures a voice.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from paras2s_pl.audio.codec_base import Audio, BatchLoops, check_tokens, prepare_input
from paras2s_pl.audio.codec_base import AudioCodec as AudioCodec  # re-export: the codecs' face
from paras2s_pl.audio.codec_calibration import (
    CALIBRATION,
    CALIBRATION_TEXTS,
    WPM_GAIN,
    VoiceCalibration,
)
from paras2s_pl.audio.prosody import PITCH_CEILING, PITCH_FLOOR, SILENCE_DB, frame_tracks
from paras2s_pl.audio.tts import STYLE_PRESETS, EspeakTTS, Prosody, check_text
from paras2s_pl.data import labels

log = logging.getLogger(__name__)

FRAME_RATE = 12.5  # tokens per second (Kimi-Audio / GLM-4-Voice tokenizer, Mimi)
SUBFRAMES = 8  # 10 ms Praat frames per 80 ms token
ENERGY_RANGE_DB = (-56.0, -7.0)  # 80 ms frames of eSpeak speech: 1st-100th pct -50..-9
TREMBLE_SCORE = 0.11  # see ProsodyCodec.describe_tokens


def _active_s(d: dict[str, float | int]) -> float:
    """Seconds from the first to the last non-silent frame of token statistics ``d``."""
    return (d["frames"] - d["lead_frames"] - d["tail_frames"]) / FRAME_RATE


# --------------------------------------------------------------------------- prosody codec
class ProsodyCodec(BatchLoops):
    """Embedded codec: 12.5 Hz tokens of quantised pitch and energy; decode = eSpeak TTS.

    Decoding speaks ``text`` with the prosody the tokens carry: the voice comes from the
    pitch :meth:`register` (< ``male_below_hz``: the male speaker; ≥ ``child_above_hz``:
    the female speaker with the TTS's child shift; else the female speaker); eSpeak pitch
    and range from the voiced frames' mean F0 and F0 standard deviation, volume from the
    active frames' mean energy (all through the calibrated maps), the rate from the active
    duration (first to last non-silent frame), and the fear preset's tremble when the pitch
    zigzags (see :meth:`describe_tokens`). The first rendering's duration fixes the rate;
    the codec then encodes its own output and corrects pitch, range and volume once (at
    most three syntheses and one encode). Silent lead/tail frames become silence, so the
    output lasts ``len(tokens) / 12.5`` s unless the text needs longer even at eSpeak's
    fastest rate. Voice quality and formants are not carried.

    Defined edge cases: no tokens → 0 samples; all-silent tokens → silence of the tokens'
    length; ``text`` None, letterless, or giving eSpeak no audio → a hum rendered from the
    tokens (harmonic tone at each voiced frame's F0, noise on unvoiced active frames, each
    frame at its energy). Non-English text is read with English rules.
    """

    frame_rate: float = FRAME_RATE

    def __init__(
        self,
        pitch_bins: int = 32,
        energy_bins: int = 8,
        sample_rate: int = 16000,
        speakers: dict[str, str] | None = None,
        male_below_hz: float = 140.0,
        child_above_hz: float = 255.0,
        child_shift: float = 1.3,
    ) -> None:
        """Build the quantiser and the decoder's TTS.

        Args:
            pitch_bins: Voiced log-F0 bins over [60, 600] Hz (plus one unvoiced value).
            energy_bins: Energy levels including the silence level 0 (≥ 2).
            sample_rate: Rate of decoded audio; input to :meth:`encode` may be at any rate.
            speakers: eSpeak speakers for decoding, ``{"male": ..., "female": ...}``; defaults
                ``m1`` and ``f2`` (the assistant's voice). Uncalibrated speakers are calibrated
                on first use (a few seconds).
            male_below_hz: :meth:`register` below which the male speaker decodes.
            child_above_hz: :meth:`register` from which the female speaker decodes with
                ``child_shift``.
            child_shift: Pitch+formant shift of child-register output (the TTS child preset's).
        """
        if pitch_bins < 1 or energy_bins < 2:
            raise ValueError(f"need pitch_bins >= 1 and energy_bins >= 2, got {pitch_bins}, "
                             f"{energy_bins}")  # fmt: skip
        self.pitch_bins, self.energy_bins = int(pitch_bins), int(energy_bins)
        self.vocab_size = (self.pitch_bins + 1) * self.energy_bins
        self.sample_rate = int(sample_rate)
        self.speakers = {"male": "m1", "female": "f2", **(speakers or {})}
        for role, name in self.speakers.items():
            if name not in labels.all_speakers():
                raise ValueError(f"speakers[{role!r}] = {name!r} is not one of "
                                 f"{list(labels.all_speakers())}")  # fmt: skip
        self.male_below_hz, self.child_above_hz = male_below_hz, child_above_hz
        self.child_shift = float(child_shift)
        self.tts = EspeakTTS(self.sample_rate)
        lo, hi = np.log(PITCH_FLOOR), np.log(PITCH_CEILING)
        self._log_f0 = (lo, hi)
        self.f0_centres = np.exp(lo + (np.arange(self.pitch_bins) + 0.5) * (hi - lo) / pitch_bins)
        elo, ehi = ENERGY_RANGE_DB
        step = (ehi - elo) / (self.energy_bins - 1)
        self.energy_centres = elo + (np.arange(self.energy_bins - 1) + 0.5) * step

    # ------------------------------------------------------------------ encode
    def encode(self, wav: np.ndarray, sample_rate: int) -> torch.Tensor:
        """Audio → ``ceil(seconds * 12.5)`` token ids (silence → id 0; NaN → ValueError)."""
        x = prepare_input(wav, "wav passed to ProsodyCodec.encode")
        t = frame_tracks(x, sample_rate, hop=1 / (FRAME_RATE * SUBFRAMES))
        n = -(-t.f0.size // SUBFRAMES)
        pad = n * SUBFRAMES - t.f0.size
        f0 = np.pad(t.f0, (0, pad)).reshape(n, SUBFRAMES)
        power = np.pad(10 ** (t.energy_db / 10), (0, pad)).reshape(n, SUBFRAMES).mean(axis=1)
        energy = 10 * np.log10(np.maximum(power, 1e-20))
        voiced = (f0 > 0).sum(axis=1) >= SUBFRAMES // 2
        log_f0 = np.zeros(n)
        for i in np.flatnonzero(voiced):  # median over the frame's voiced 10 ms frames
            log_f0[i] = np.median(np.log(f0[i][f0[i] > 0]))
        lo, hi = self._log_f0
        pitch = np.floor((log_f0 - lo) / (hi - lo) * self.pitch_bins).clip(0, self.pitch_bins - 1)
        pitch = np.where(voiced, pitch + 1, 0).astype(np.int64)
        elo, ehi = ENERGY_RANGE_DB
        level = np.floor((energy - elo) / (ehi - elo) * (self.energy_bins - 1))
        level = 1 + level.clip(0, self.energy_bins - 2)
        level = np.where((energy > SILENCE_DB) | voiced, level, 0).astype(np.int64)
        return torch.from_numpy(pitch * self.energy_bins + level)

    def describe_tokens(self, tokens: torch.Tensor | Sequence[int]) -> dict[str, float | int]:
        """Prosody the tokens carry (what :meth:`decode` renders; handy in tests and logs).

        Returns frames, duration (s), active_frames (non-silent), lead_frames and
        tail_frames (silent frames before the first / after the last active frame),
        voiced_frames, f0_mean (Hz over voiced frames, 0 if none), f0_sd_st and f0_range_st
        (standard deviation and 5-95 % range of voiced frames, semitones), energy_db (mean
        over active frames; -60 if none) and turns: the fraction of runs of three voiced
        frames whose contour turns (up-down or down-up). A 7 Hz tremble, sampled at
        12.5 Hz, aliases to a frame-to-frame zigzag: ``turns - 0.26 * f0_sd_st >=``
        :data:`TREMBLE_SCORE` holds for 31 of 36 fear presets and 0 of 648 other utterances
        (12 speakers × 19 styles × 3 texts), so :meth:`decode` then trembles.
        """
        t = check_tokens(tokens, self.vocab_size).numpy()
        pitch, level = t // self.energy_bins, t % self.energy_bins
        active = np.flatnonzero(level > 0)
        f0 = self.f0_centres[pitch[pitch > 0] - 1]
        st = 12 * np.log2(f0 / 100.0) if f0.size else np.zeros(1)
        seq = np.where(pitch > 0, pitch, np.nan)  # bin steps; NaN breaks voiced runs
        d1, d2 = seq[1:-1] - seq[:-2], seq[2:] - seq[1:-1]
        triple = ~np.isnan(d1 * d2)
        return {
            "frames": int(t.size),
            "duration": t.size / FRAME_RATE,
            "active_frames": int(active.size),
            "lead_frames": int(active[0]) if active.size else int(t.size),
            "tail_frames": int(t.size - 1 - active[-1]) if active.size else 0,
            "voiced_frames": int(f0.size),
            "f0_mean": float(f0.mean()) if f0.size else 0.0,
            "f0_sd_st": float(st.std()),
            "f0_range_st": float(np.percentile(st, 95) - np.percentile(st, 5)),
            "turns": float(np.mean(d1[triple] * d2[triple] < 0)) if triple.any() else 0.0,
            "energy_db": float(self.energy_centres[level[active] - 1].mean())
            if active.size
            else SILENCE_DB,
        }

    # ------------------------------------------------------------------ decode
    def decode(self, tokens: torch.Tensor | Sequence[int], text: str | None = None) -> Audio:
        """Tokens + text → speech in the tokens' prosody (edge cases: class docstring).

        Raises:
            ValueError: tokens not 1-D integers, or ids outside ``[0, vocab_size)``.
        """
        t = check_tokens(tokens, self.vocab_size)
        d = self.describe_tokens(t)
        n_out = round(d["frames"] * self.sample_rate / FRAME_RATE)
        if d["active_frames"] == 0:
            return np.zeros(n_out, np.float32), self.sample_rate
        speech = None
        if text is not None and any(ch.isalnum() for ch in text):
            try:
                speech = self._speak(text, d)
            except ValueError as err:  # eSpeak made no audio of this text
                log.info("ProsodyCodec.decode: %s; rendering a hum instead", err)
        return (self._hum(t.numpy()) if speech is None else speech), self.sample_rate

    def _place(self, speech: np.ndarray, d: dict[str, float | int]) -> np.ndarray:
        """Pad ``speech`` with the tokens' silent lead, and tail up to their length."""
        lead = round(d["lead_frames"] * self.sample_rate / FRAME_RATE)
        tail = max(0, round(d["frames"] * self.sample_rate / FRAME_RATE) - lead - speech.size)
        return np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(tail, np.float32)])

    def register(self, d: dict[str, float | int]) -> float:
        """Pitch register (Hz) of token statistics ``d``: mean F0 less the style's lift.

        Aroused styles raise F0 together with loudness and range, so F0 alone confuses a
        surprised man with a sad woman (5 % of the eSpeak presets). Moving F0 down by
        0.4 st per dB above -28 dBFS (clipped to ±8 dB: recording gain varies) and 0.3 st
        per semitone of range above 4 st puts 643 of 648 adult preset utterances (12
        speakers × 18 styles × 3 texts) on their gender's side of 140 Hz; at 255 Hz, 7 of
        36 child and 4 of 648 adult utterances fall on the wrong side (male children
        overlap adult women). 0 when no frame is voiced.
        """
        lift = 0.4 * np.clip(d["energy_db"] + 28, -8, 8) + 0.3 * (d["f0_range_st"] - 4)
        return float(d["f0_mean"] * 2 ** (-lift / 12))

    def voice(self, d: dict[str, float | int]) -> tuple[str, float]:
        """The eSpeak speaker and shift that render token statistics ``d``."""
        reg = self.register(d)
        if reg >= self.child_above_hz:  # a child's voice is not gendered (see tts.py)
            return self.speakers["female"], self.child_shift
        if 0 < reg < self.male_below_hz:
            return self.speakers["male"], 1.0
        return self.speakers["female"], 1.0

    def calibration(self, speaker: str) -> VoiceCalibration:
        """Stored :data:`CALIBRATION` of ``speaker``, or a fresh :func:`calibrate_voice`."""
        if speaker not in CALIBRATION:
            log.info("calibrating eSpeak speaker %s for ProsodyCodec (once per process)", speaker)
            CALIBRATION[speaker] = calibrate_voice(speaker)
        return CALIBRATION[speaker]

    def prosody_for(
        self, d: dict[str, float | int], words: int, got: dict[str, float | int] | None = None
    ) -> tuple[Prosody, str]:
        """The :class:`Prosody` and speaker that render token statistics ``d``.

        ``words`` sets the first guess of the rate for the active duration. ``got``:
        statistics measured on a first rendering; the request then asks for the target
        plus what that one missed (a first-order correction of the calibration's residual
        for this text and voice).
        """
        speaker, shift = self.voice(d)
        cal = self.calibration(speaker)
        f0, sd, energy = d["f0_mean"], d["f0_sd_st"], d["energy_db"]
        if got is not None and got["voiced_frames"] and f0:
            f0, sd = f0 * f0 / got["f0_mean"], 2 * sd - got["f0_sd_st"]
        if got is not None and got["active_frames"]:
            energy = 2 * energy - got["energy_db"]
        if f0:
            pitch, rng, volume = cal.invert(f0 / shift, sd, energy)
        else:  # whisper-like: the speaker's plain pitch, loudness from the tokens
            pitch, rng, volume = 50, 50, cal.invert(cal.f0_hz, 0.0, energy)[2]
        rate = int(np.clip(round(words * 60 / _active_s(d) / WPM_GAIN), 80, 450))
        trembles = d["turns"] - 0.26 * d["f0_sd_st"] >= TREMBLE_SCORE
        tremble = STYLE_PRESETS["fear"].tremble if trembles else 0.0
        return Prosody(pitch, rng, rate, volume, shift=shift, tremble=tremble), speaker

    def _speak(self, text: str, d: dict[str, float | int]) -> np.ndarray:
        """Synthesise ``text``; fix the rate, then measure and correct the rest, once each."""
        text, words = check_text(text), len(check_text(text).split())
        pro, speaker = self.prosody_for(d, words)
        wav, _ = self.tts.synthesize_prosody(text, pro, speaker)
        ratio = wav.size / self.sample_rate / _active_s(d)  # duration ∝ 1 / rate
        pro = replace(pro, rate=int(np.clip(round(pro.rate * ratio), 80, 450)))
        wav, _ = self.tts.synthesize_prosody(text, pro, speaker)
        wav = self._place(wav, d)
        got = self.describe_tokens(self.encode(wav, self.sample_rate))
        fixed = replace(self.prosody_for(d, words, got)[0], rate=pro.rate)  # rate: done above
        if fixed != pro:
            wav = self._place(self.tts.synthesize_prosody(text, fixed, speaker)[0], d)
        return wav

    def _hum(self, t: np.ndarray) -> np.ndarray:
        """Text-free rendering: F0 contour as a harmonic tone, energy as its level."""
        sr, hop = self.sample_rate, self.sample_rate / FRAME_RATE
        pitch, level = t // self.energy_bins, t % self.energy_bins
        n = round(t.size * hop)
        frame = np.minimum((np.arange(n) / hop).astype(int), t.size - 1)
        rms = np.where(level > 0, 10 ** (self.energy_centres[level - 1] / 20), 0.0)
        voiced = pitch > 0
        f0 = self.f0_centres[np.maximum(pitch, 1) - 1]
        if voiced.any():  # hold F0 through unvoiced frames so the phase stays continuous
            f0 = np.interp(np.arange(t.size), np.flatnonzero(voiced), f0[voiced])
        phase = 2 * np.pi * np.cumsum(f0[frame]) / sr
        k = np.arange(1, 9)[:, None]  # 8 harmonics at 1/k: a buzzy, voice-like source
        tone = (np.sin(k * phase) / k).sum(axis=0) / np.sqrt((0.5 / k**2).sum())
        noise = np.random.default_rng(0).standard_normal(n)
        smooth = np.ones(round(0.01 * sr)) / round(0.01 * sr)  # 10 ms ramps between frames
        v = np.convolve(voiced[frame].astype(float), smooth, mode="same")
        amp = np.convolve(rms[frame], smooth, mode="same")
        return np.clip(amp * (v * tone + (1 - v) * noise), -1, 1).astype(np.float32)


# --------------------------------------------------------------------------- calibration
# The measurement half of codec_calibration: it runs ProsodyCodec, so it lives here and
# codec_calibration keeps only the model and the stored constants (no import back).
def calibrate_voice(speaker: str, texts: Sequence[str] = CALIBRATION_TEXTS) -> VoiceCalibration:
    """Measure ``speaker``'s eSpeak voice through :class:`ProsodyCodec` and fit the map.

    Grid: pitch 30..100 step 10 × range 0, 25, 50, 75, 100 at volume 100, rate 170, on
    each text (40 × 3 syntheses, ~3 s). Each point is encoded and summarised with
    :meth:`ProsodyCodec.describe_tokens`; the F0 model is fitted by nonlinear least squares
    (scipy), F0 sd and energy by linear least squares (see :class:`VoiceCalibration`).
    """
    from scipy.optimize import curve_fit

    codec = ProsodyCodec()
    rows = []
    for pitch in range(30, 101, 10):
        for rng in (0, 25, 50, 75, 100):
            ds = [
                codec.describe_tokens(codec.encode(*codec.tts.synthesize_prosody(
                    text, Prosody(pitch, rng), speaker)))
                for text in texts
            ]  # fmt: skip
            sd_st = np.mean([d["f0_sd_st"] for d in ds])
            m = np.mean([d["f0_mean"] for d in ds])
            energy = np.mean([d["energy_db"] for d in ds])
            rows.append((pitch, rng, m, m * (2 ** (sd_st / 12) - 1), energy))
    p, r, m, sd, energy = np.array(rows).T

    def model(x: np.ndarray, a: float, k: float, c: float) -> np.ndarray:
        return a * np.exp(k * (x[0] - 50)) + c * x[1]

    (a, k, c), _ = curve_fit(model, np.stack([p, r]), m, p0=(m.min(), 0.011, 0.3))
    s1, s0 = np.polyfit(r, sd, 1)
    e1, e0 = np.polyfit(p - 50, energy, 1)
    return VoiceCalibration(*(round(float(v), 5) for v in (a, k, c, s0, s1, e0, e1)))


def calibrate_volume(
    speakers: Sequence[str] = ("m1", "f2"), texts: Sequence[str] = CALIBRATION_TEXTS
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Token-energy gain (dB) of each eSpeak volume against 100, averaged over voices."""
    codec, vols = ProsodyCodec(), (10, 20, 30, 50, 75, 100, 125, 150, 175, 196)

    def energy(volume: int) -> float:
        return float(np.mean([
            codec.describe_tokens(codec.encode(*codec.tts.synthesize_prosody(
                text, Prosody(pitch, volume=volume), speaker)))["energy_db"]
            for speaker in speakers for pitch in (30, 50, 80) for text in texts
        ]))  # fmt: skip

    ref = energy(100)
    return vols, tuple(round(energy(v) - ref, 2) for v in vols)


def __getattr__(name: str) -> type:
    """``MimiCodec``/``KimiAudioCodec`` live in :mod:`.neural_codec` (they need torch models)."""
    if name in ("MimiCodec", "KimiAudioCodec"):
        from paras2s_pl.audio import neural_codec

        return getattr(neural_codec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """CLI: round-trip a wav file through :class:`ProsodyCodec`, or calibrate a speaker."""
    import soundfile as sf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wav", nargs="?", help="input audio file")
    ap.add_argument("text", nargs="?", help="text to speak (omit: a hum of the tokens)")
    ap.add_argument("--out", default="codec.wav")
    ap.add_argument("--calibrate", metavar="SPEAKER", help="print a speaker's calibration")
    args = ap.parse_args(argv)
    if args.calibrate:
        print(calibrate_voice(args.calibrate))
        return
    if not args.wav:
        ap.error("pass an audio file (or --calibrate SPEAKER)")
    wav, sr = sf.read(args.wav, dtype="float32")
    codec = ProsodyCodec()
    tokens = codec.encode(wav, sr)
    out, out_sr = codec.decode(tokens, args.text)
    sf.write(args.out, out, out_sr)
    print(f"{len(tokens)} tokens, {codec.describe_tokens(tokens)}; wrote {args.out}")


if __name__ == "__main__":
    main()
