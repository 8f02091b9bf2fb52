"""Audio encoding, decoding and resampling: the one place that changes sample rates.

Every backend (TTS, ASR, captioner, codec) and the shard reader call :func:`resample`
and :func:`to_mono` here, so rate conversion has a single implementation (soxr, high
quality) and a single set of checks.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import soxr

#: Sample rates a header may declare. Outside them the file is corrupt or not speech, and
#: resampling it would multiply its size (a 1 Hz header grows ×16,000 at 16 kHz).
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000
#: What libsndfile reports as the frame count of a stream of unknown length.
_UNKNOWN_FRAMES = 2**62


class AudioError(ValueError):
    """Audio that cannot be used: empty, non-finite, undecodable."""


class AudioTooLongError(AudioError):
    """Audio whose header declares more than the allowed duration (refused undecoded)."""


def to_mono(wav: np.ndarray) -> np.ndarray:
    """Downmix ``(frames, channels)`` to ``(frames,)`` float32; 1-D input passes through."""
    wav = np.asarray(wav)
    if wav.ndim == 2:
        wav = wav.mean(axis=1)
    elif wav.ndim != 1:
        raise AudioError(f"audio has shape {wav.shape}; expected (frames,) or (frames, channels)")
    return wav.astype(np.float32, copy=False)


def resample(wav: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Resample mono float32 audio from ``sr`` to ``target_sr`` (no-op when equal)."""
    if sr <= 0 or target_sr <= 0:
        raise AudioError(f"sample rates must be positive, got {sr} -> {target_sr}")
    wav = np.asarray(wav, dtype=np.float32)
    if sr == target_sr or wav.size == 0:
        return wav
    return soxr.resample(wav, sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def check_finite(wav: np.ndarray, what: str = "audio") -> np.ndarray:
    """Raise :class:`AudioError` on empty or NaN/inf audio; return ``wav`` unchanged."""
    if wav.size == 0:
        raise AudioError(f"{what} is empty (0 samples)")
    if not np.isfinite(wav).all():
        raise AudioError(f"{what} holds {int((~np.isfinite(wav)).sum())} NaN/inf samples")
    return wav


def encode_audio(wav: np.ndarray, sr: int, fmt: str = "flac") -> bytes:
    """Encode mono float32 audio as 16-bit ``flac`` or ``wav`` bytes (clipped to [-1, 1])."""
    buf = io.BytesIO()
    data = np.clip(check_finite(to_mono(wav)), -1.0, 1.0)
    sf.write(buf, data, sr, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


def decode_audio(data: bytes, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode audio bytes to ``(float32 array of shape (frames,) or (frames, ch), rate)``.

    The header is checked first, so memory stays bounded whatever the bytes claim: a rate
    outside :data:`MIN_SAMPLE_RATE`..:data:`MAX_SAMPLE_RATE` or an unknown length raises
    :class:`AudioError`, a duration over ``max_seconds`` :class:`AudioTooLongError`, all
    before a sample is decoded (a 546 KB silent FLAC can declare 3 hours: 1 GB decoded).
    """
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            _check_header(int(f.samplerate), int(f.frames), max_seconds, len(data))
            # soundfile sizes the array from the header's frame count, checked above
            wav, sr = f.read(dtype="float32", always_2d=False), f.samplerate
    except AudioError:
        raise
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError variants
        raise AudioError(f"cannot decode audio ({len(data)} bytes): {err}") from None
    return wav, int(sr)


def _check_header(sr: int, frames: int, max_seconds: float | None, size: int) -> None:
    """Raise :class:`AudioError` on a header that :func:`decode_audio` must not decode."""
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"header declares {sr} Hz; expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
        )
    if frames >= _UNKNOWN_FRAMES:  # soundfile could not size the array either
        raise AudioError(f"header declares no length ({size} bytes); cannot bound it")
    if max_seconds is not None and frames > max_seconds * sr:
        raise AudioTooLongError(
            f"header declares {frames / sr:.1f} s; the limit is {max_seconds:g} s"
        )
