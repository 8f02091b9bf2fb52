"""Prosodic features from Praat (parselmouth): pitch, energy, voicing, speaking rate.

The style captioner and the prosody codec both stand on these measurements, so they are
computed here once::

    from paras2s_pl.audio.prosody import frame_tracks, summarize
    tracks = frame_tracks(wav, sr, hop=0.08)      # per-frame F0 (Hz, 0 = unvoiced), energy dB
    feats = summarize(wav, sr)                    # utterance-level ProsodyFeatures

Speaking rate counts syllable nuclei: peaks of the intensity contour that stand out
(≥ 2 dB prominence), are voiced and are within 25 dB of the loudest frame — a compact
form of de Jong & Wempe's (2009) Praat method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import parselmouth
from scipy.signal import find_peaks

from paras2s_pl.audio.io import check_finite, resample, to_mono

ANALYSIS_RATE = 16000
PITCH_FLOOR = 60.0  # Hz: below a deep male voice
PITCH_CEILING = 600.0  # Hz: above a high child voice
SILENCE_DB = -60.0  # dBFS: energy of a frame counted as silence
MIN_SECONDS = 0.064  # Praat needs a few pitch periods at the floor


@dataclass(frozen=True)
class Tracks:
    """Frame-level contours at a fixed hop."""

    hop: float
    f0: np.ndarray  # (frames,) Hz, 0 where unvoiced
    energy_db: np.ndarray  # (frames,) dBFS RMS

    @property
    def voiced(self) -> np.ndarray:
        """Boolean mask of voiced frames."""
        return self.f0 > 0


@dataclass(frozen=True)
class ProsodyFeatures:
    """Utterance-level prosody; ``silent`` when no frame rises above the silence floor."""

    duration: float  # s of the whole input
    active_seconds: float  # s above the silence floor
    f0_mean: float  # Hz over voiced frames (0 if none)
    f0_sd_st: float  # pitch variability, semitones
    f0_range_st: float  # 5th–95th percentile range, semitones
    energy_db: float  # mean dBFS over active frames
    voiced_fraction: float  # of active frames
    rate: float  # syllable nuclei per active second
    silent: bool

    def as_dict(self) -> dict[str, float | bool]:
        """Plain dict for logging and json."""
        return asdict(self)


def _prepare(wav: np.ndarray, sr: int) -> np.ndarray:
    wav = check_finite(to_mono(np.asarray(wav)), "audio")
    return resample(wav, sr, ANALYSIS_RATE).astype(np.float64)


def frame_tracks(wav: np.ndarray, sr: int, hop: float = 0.01) -> Tracks:
    """F0 and energy every ``hop`` seconds (frame ``i`` centred at ``(i + 0.5) * hop``)."""
    x = _prepare(wav, sr)
    n = max(1, int(np.ceil(len(x) / (hop * ANALYSIS_RATE))))
    centres = (np.arange(n) + 0.5) * hop
    f0 = np.zeros(n)
    if len(x) / ANALYSIS_RATE >= MIN_SECONDS and np.abs(x).max() > 0:
        pitch = parselmouth.Sound(x, ANALYSIS_RATE).to_pitch_ac(
            time_step=min(hop, 0.01), pitch_floor=PITCH_FLOOR, pitch_ceiling=PITCH_CEILING
        )
        values = pitch.selected_array["frequency"]
        if len(values):
            # nearest analysis frame per output frame; unvoiced is 0 in Praat's array
            idx = np.clip(
                np.round((centres - pitch.xs()[0]) / pitch.time_step).astype(int),
                0,
                len(values) - 1,
            )
            f0 = values[idx]
    win = int(hop * ANALYSIS_RATE)
    padded = np.pad(x, (0, n * win - len(x)))
    rms = np.sqrt(np.mean(padded.reshape(n, win) ** 2, axis=1))
    energy = 20 * np.log10(np.maximum(rms, 1e-10))
    return Tracks(hop=hop, f0=np.where(energy > SILENCE_DB, f0, 0.0), energy_db=energy)


def semitones(f0: np.ndarray, ref: float = 100.0) -> np.ndarray:
    """Hz → semitones relative to ``ref``."""
    return 12 * np.log2(np.asarray(f0) / ref)


def _rate(t: Tracks) -> float:
    """Syllable nuclei per active second (see module docstring)."""
    active = t.energy_db > SILENCE_DB
    if active.sum() < 3:
        return 0.0
    smooth = np.convolve(t.energy_db, np.ones(3) / 3, mode="same")
    peaks, _ = find_peaks(smooth, prominence=2.0)
    keep = [p for p in peaks if t.voiced[p] and smooth[p] > smooth.max() - 25]
    return len(keep) / (active.sum() * t.hop)


def summarize(wav: np.ndarray, sr: int) -> ProsodyFeatures:
    """Utterance-level :class:`ProsodyFeatures` of mono audio at ``sr``."""
    t = frame_tracks(wav, sr, hop=0.01)
    duration = len(np.asarray(wav)) / sr
    active = t.energy_db > SILENCE_DB
    if not active.any():
        return ProsodyFeatures(duration, 0.0, 0.0, 0.0, 0.0, SILENCE_DB, 0.0, 0.0, True)
    voiced = t.f0[t.voiced]
    st = semitones(voiced) if len(voiced) else np.zeros(1)
    return ProsodyFeatures(
        duration=duration,
        active_seconds=float(active.sum() * t.hop),
        f0_mean=float(voiced.mean()) if len(voiced) else 0.0,
        f0_sd_st=float(st.std()),
        f0_range_st=float(np.percentile(st, 95) - np.percentile(st, 5)),
        energy_db=float(t.energy_db[active].mean()),
        voiced_fraction=float(t.voiced[active].mean()),
        rate=_rate(t),
        silent=False,
    )
