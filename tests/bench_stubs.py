"""Instant stand-ins for the bench's ``C`` (ASR) and ``S`` (style captioner) in tests.

Deterministic, so a rerun builds the same judge prompts (``test_bench.py``, also imported
by its crash-test subprocess).
"""

from __future__ import annotations


class LenASR:
    """Stub ``C``: the transcript says how long the audio is; counts what it transcribed."""

    name = "len-asr"

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, wavs, sample_rate):
        self.calls += len(wavs)
        return [f"a reply of {len(w)} samples" for w in wavs]


class FixedCaptioner:
    """Stub ``S``: every response sounds neutral."""

    name = "fixed-tone"

    def describe(self, wavs, sample_rate):
        return ["neutral (female voice)"] * len(wavs)
