"""The audio-codec protocol and the helpers every codec shares.

:class:`AudioCodec` is what the LM side sees of a codec (the paper's ρ): ``encode`` turns
mono audio at any rate into a 1-D ``LongTensor`` of ids in ``[0, vocab_size)`` at
``frame_rate`` tokens per second; ``decode`` turns ids (plus, for codecs that need it, the
text stream) into ``(wav, sr)``. :class:`BatchLoops` gives a codec its batch methods from its
single-item ones; :func:`prepare_input` and :func:`check_tokens` validate what ``encode`` and
``decode`` are given. The codecs themselves live in :mod:`paras2s_pl.audio.codec`
(``ProsodyCodec``) and :mod:`paras2s_pl.audio.neural_codec` (``MimiCodec``,
``KimiAudioCodec``); this module imports neither, so both can import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from paras2s_pl.audio.io import check_finite, to_mono

Audio = tuple[np.ndarray, int]  # (mono float32 wav, sample rate)


@runtime_checkable
class AudioCodec(Protocol):
    """Tokenizer/detokenizer of the LM's audio stream (see the module docstring)."""

    frame_rate: float  # tokens per second of audio
    vocab_size: int  # ids are in [0, vocab_size)
    sample_rate: int  # rate of decoded audio (input may be at any rate)

    def encode(self, wav: np.ndarray, sample_rate: int) -> torch.LongTensor:
        """Mono (or ``(frames, channels)``) audio at ``sample_rate`` → 1-D token ids."""
        ...

    def decode(self, tokens: torch.LongTensor, text: str | None = None) -> Audio:
        """Token ids (+ the text stream, for codecs that speak it) → ``(wav, sr)``."""
        ...

    def encode_batch(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[torch.Tensor]:
        """:meth:`encode` of each waveform."""
        ...

    def decode_batch(
        self, tokens_list: Sequence[torch.Tensor], texts: Sequence[str | None] | None = None
    ) -> list[Audio]:
        """:meth:`decode` of each token sequence (``texts`` None: no text for any)."""
        ...


class BatchLoops:
    """``encode_batch``/``decode_batch`` as loops over the single-item methods."""

    def encode_batch(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[torch.Tensor]:
        """:meth:`encode` of each waveform; an error names the failing item's index."""
        out = []
        for i, wav in enumerate(wavs):
            try:
                out.append(self.encode(wav, sample_rate))
            except ValueError as err:
                raise ValueError(f"wavs[{i}]: {err}") from err
        return out

    def decode_batch(
        self, tokens_list: Sequence[torch.Tensor], texts: Sequence[str | None] | None = None
    ) -> list[Audio]:
        """:meth:`decode` of each token sequence with its text."""
        texts = [None] * len(tokens_list) if texts is None else list(texts)
        if len(texts) != len(tokens_list):
            raise ValueError(f"got {len(tokens_list)} token sequences but {len(texts)} texts")
        return [self.decode(t, x) for t, x in zip(tokens_list, texts, strict=True)]


def prepare_input(wav: np.ndarray, what: str = "wav") -> np.ndarray:
    """Mono float32 audio; :class:`~paras2s_pl.audio.io.AudioError` names ``what`` if bad."""
    return check_finite(to_mono(np.asarray(wav)), what)


def check_tokens(tokens: torch.Tensor | Sequence[int], vocab_size: int) -> torch.Tensor:
    """Return ``tokens`` as a 1-D int64 CPU tensor; ``ValueError`` on bad shape or ids."""
    t = torch.as_tensor(tokens).detach().cpu()
    if t.ndim != 1 or t.is_floating_point() or t.is_complex():
        raise ValueError(f"tokens must be a 1-D integer tensor, got {t.dtype} of {tuple(t.shape)}")
    t = t.long()
    bad = (t < 0) | (t >= vocab_size)
    if bool(bad.any()):
        pos = bad.nonzero().flatten()
        raise ValueError(
            f"{len(pos)} token ids out of range for vocab_size={vocab_size}: "
            f"ids {t[pos[:8]].tolist()} at positions {pos[:8].tolist()}; valid ids are "
            f"0..{vocab_size - 1} (strip special/LM-offset ids before decoding)"
        )
    return t
