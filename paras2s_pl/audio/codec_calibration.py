"""Calibration of :class:`~paras2s_pl.audio.codec.ProsodyCodec`'s decoder on eSpeak NG.

The decoder must turn measured prosody (mean F0 in Hz, F0 spread in semitones, energy in
dBFS, all as the codec's own tokens report them) into eSpeak parameters. This module holds
the monotone model of how eSpeak's 0-100 pitch and range and 0-200 volume move those token
statistics for a speaker voice (:class:`VoiceCalibration`) and the fitted constants for the
decoder's default voices. The measurement runs the codec itself, so it lives beside it:
:func:`paras2s_pl.audio.codec.calibrate_voice` and :func:`~paras2s_pl.audio.codec.calibrate_volume`
(this module imports no codec, so the codec can import it). Re-measure with
``python -m paras2s_pl.audio.codec --calibrate m1`` after an eSpeak or Praat upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_PITCH = 25  # eSpeak pitch floor: m1's F0 falls under Praat's 60 Hz floor below ~20


@dataclass(frozen=True)
class VoiceCalibration:
    """How eSpeak parameters move the token statistics of one speaker voice.

    Fitted by :func:`~paras2s_pl.audio.codec.calibrate_voice` (a least-squares fit over a
    parameter grid). With pitch ``p``, range ``r`` and volume ``v`` (eSpeak's scales), the
    tokens of the synthesised speech have, over voiced frames:

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
