"""Calibration of :class:`~paras2s_pl.audio.codec.ProsodyCodec`'s decoder on eSpeak NG.

The decoder must turn measured prosody (mean F0 in Hz, F0 spread in semitones, energy in
dBFS, all as the codec's own tokens report them) into eSpeak parameters. This module
measures how eSpeak's 0-100 pitch and range and 0-200 volume move those token statistics
for a speaker voice, fits a monotone model (:class:`VoiceCalibration`), and stores the
fitted constants for the decoder's default voices. Re-measure with
``python -m paras2s_pl.audio.codec --calibrate m1`` after an eSpeak or Praat upgrade.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from paras2s_pl.audio.tts import Prosody

MIN_PITCH = 25  # eSpeak pitch floor: m1's F0 falls under Praat's 60 Hz floor below ~20


@dataclass(frozen=True)
class VoiceCalibration:
    """How eSpeak parameters move the token statistics of one speaker voice.

    Fitted by :func:`calibrate_voice` (a least-squares fit over a parameter grid). With
    pitch ``p``, range ``r`` and volume ``v`` (eSpeak's scales), the tokens of the
    synthesised speech have, over voiced frames:

    - mean F0 (Hz) = ``f0_hz * exp(f0_slope * (p - 50)) + f0_per_range * r``
    - F0 standard deviation (Hz) = ``sd_hz + sd_per_range * r``
    - mean energy (dB) = ``energy_db + energy_per_pitch * (p - 50) + volume_gain_db(v)``

    All three are monotone in their parameter, so :meth:`invert` solves them in closed form.
    """

    f0_hz: float
    f0_slope: float
    f0_per_range: float
    sd_hz: float
    sd_per_range: float
    energy_db: float
    energy_per_pitch: float

    def invert(self, f0_mean: float, f0_sd_st: float, energy_db: float) -> tuple[int, int, int]:
        """Token statistics → eSpeak ``(pitch, range, volume)``, clipped to usable values."""
        sd = f0_mean * (2.0 ** (f0_sd_st / 12) - 1)  # semitones → Hz at the mean
        rng = float(np.clip((sd - self.sd_hz) / self.sd_per_range, 0, 100))
        base = max(f0_mean - self.f0_per_range * rng, 1.0)
        pitch = float(np.clip(50 + np.log(base / self.f0_hz) / self.f0_slope, MIN_PITCH, 100))
        gain = energy_db - self.energy_db - self.energy_per_pitch * (pitch - 50)
        volume = float(np.interp(gain, VOLUME_GAIN_DB[1], VOLUME_GAIN_DB[0]))
        return round(pitch), round(rng), round(volume)


def volume_gain_db(volume: float) -> float:
    """Token-energy change (dB) of eSpeak volume ``volume`` against volume 100."""
    return float(np.interp(volume, VOLUME_GAIN_DB[0], VOLUME_GAIN_DB[1]))


CALIBRATION_TEXTS = (
    "I can't believe you finished the whole project before lunch today.",
    "Could you tell me where the nearest train station is?",
    "Please remember to water the plants while I am away next week.",
)


def calibrate_voice(speaker: str, texts: Sequence[str] = CALIBRATION_TEXTS) -> VoiceCalibration:
    """Measure ``speaker``'s eSpeak voice through :class:`ProsodyCodec` and fit the map.

    Grid: pitch 30..100 step 10 × range 0, 25, 50, 75, 100 at volume 100, rate 170, on
    each text (40 × 3 syntheses, ~3 s). Each point is encoded and summarised with
    :meth:`ProsodyCodec.describe_tokens`; the F0 model is fitted by nonlinear least squares
    (scipy), F0 sd and energy by linear least squares (see :class:`VoiceCalibration`).
    """
    from scipy.optimize import curve_fit

    from paras2s_pl.audio.codec import ProsodyCodec

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
    from paras2s_pl.audio.codec import ProsodyCodec

    codec, vols = ProsodyCodec(), (10, 20, 30, 50, 75, 100, 125, 150, 175, 196)

    def energy(volume: int) -> float:
        return float(np.mean([
            codec.describe_tokens(codec.encode(*codec.tts.synthesize_prosody(
                text, Prosody(pitch, volume=volume), speaker)))["energy_db"]
            for speaker in speakers for pitch in (30, 50, 80) for text in texts
        ]))  # fmt: skip

    ref = energy(100)
    return vols, tuple(round(energy(v) - ref, 2) for v in vols)


# Stored calibration (eSpeak NG 1.52 from espeakng-loader, Praat via parselmouth), made
# with calibrate_voice("m1"/"f2") and calibrate_volume() on CALIBRATION_TEXTS. RMS (max)
# residuals over the 40-point grid, m1 / f2: mean F0 0.14 (0.37) / 0.16 (0.47) st, F0 sd
# 0.15 (0.42) / 0.19 (0.54) st, energy 0.36 (0.78) / 0.39 (1.08) dB. Volume: close to
# 20*log10(v/100) up to 125; louder, eSpeak compresses (+2 dB more at 196).
CALIBRATION: dict[str, VoiceCalibration] = {
    "m1": VoiceCalibration(82.53721, 0.0114, 0.25024, 1.35081, 0.13742, -28.23959, 0.03655),
    "f2": VoiceCalibration(170.40128, 0.01125, 0.55958, 0.86902, 0.38752, -25.65255, 0.03424),
}
VOLUME_GAIN_DB = (
    (10, 20, 30, 50, 75, 100, 125, 150, 175, 196),
    (-19.26, -13.72, -10.24, -6.05, -2.48, 0.0, 1.86, 3.67, 6.31, 7.88),
)
# Realised / nominal words per minute, measured over the active frames of the three
# calibration texts at rates 80..400: 1.08-1.42 (per text), mean 1.25. Only the first
# guess: decode measures the first rendering and corrects the rate (and the rest) once.
WPM_GAIN = 1.25
