"""Speech recognition backends behind one protocol, and WER on normalised text.

* :class:`PocketSphinxASR` — the embedded default (paper's ``C`` is Whisper-large-v3):
  the English acoustic model shipped in the pocketsphinx wheel plus a trigram **domain
  LM** of the mini world's text (:mod:`paras2s_pl.audio.lm`), built and cached on first
  use. The generic LM shipped with the wheel is kept as ``use_domain_lm=False``.
* :class:`WhisperASR` — ``transformers`` Whisper, loaded lazily from a local path or the
  hub only when ``transcribe`` is first called; audio over 30 s is decoded long-form.

Every backend takes mono float32 audio at any rate (resampled with
:func:`paras2s_pl.audio.io.resample`) and returns one string per input, with the same
defined results on bad input: empty or near-silent audio (peak < ``silence_peak``) gives
``""`` without decoding; NaN/inf samples raise :class:`~paras2s_pl.audio.io.AudioError`
(a ``ValueError``) naming the input's index and the fix — garbage in a benchmark must
not pass as an empty transcript.

Run: ``python -m paras2s_pl.audio.asr x.wav [--generic]`` prints the transcript. In code::

    asr = PocketSphinxASR()
    texts = asr.transcribe([wav], sample_rate=22050)
    wer(refs, texts)
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import jiwer
import numpy as np

from paras2s_pl.audio.io import AudioError, resample, to_mono
from paras2s_pl.audio.lm import DomainLM, build_domain_lm, mini_world_text, normalize_text

log = logging.getLogger(__name__)

__all__ = ["ASR", "PocketSphinxASR", "WhisperASR", "normalize_text", "wer", "prepare_audio"]


@runtime_checkable
class ASR(Protocol):
    """A recogniser: mono float32 waveforms at ``sample_rate`` -> one transcript each."""

    sample_rate: int  # the backend's own rate; inputs at other rates are resampled

    def transcribe(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[str]:
        """Return one (possibly empty) transcript per input, in order."""
        ...


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus-level word error rate on :func:`normalize_text` forms.

    ``(substitutions + deletions + insertions) / reference words``, summed over all pairs
    (not a mean of per-utterance rates). An empty hypothesis counts every reference word
    as deleted.

    Raises:
        ValueError: different lengths, or no reference word at all.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"wer: {len(refs)} references but {len(hyps)} hypotheses")
    refs_n = [normalize_text(r) for r in refs]
    if not any(refs_n):
        raise ValueError("wer: the references hold no words; WER is undefined")
    return float(jiwer.wer(refs_n, [normalize_text(h) for h in hyps]))


def prepare_audio(
    wavs: Sequence[np.ndarray], sample_rate: int, target_rate: int, silence_peak: float
) -> list[np.ndarray | None]:
    """Check and resample inputs; ``None`` marks an input whose transcript is ``""``.

    Raises:
        AudioError: an input holds NaN/inf (the message names ``wavs[i]`` and the fix).
    """
    if isinstance(wavs, np.ndarray) and wavs.ndim == 1:
        raise TypeError("transcribe() takes a sequence of waveforms; wrap one array: [wav]")
    out: list[np.ndarray | None] = []
    for i, wav in enumerate(wavs):
        wav = to_mono(wav)
        if wav.size and not np.isfinite(wav).all():
            bad = int((~np.isfinite(wav)).sum())
            raise AudioError(
                f"wavs[{i}] holds {bad} NaN/inf sample(s) of {wav.size}; repair it "
                "(np.nan_to_num) or drop that input before transcribe()"
            )
        if wav.size == 0 or float(np.abs(wav).max()) < silence_peak:
            out.append(None)
            continue
        out.append(resample(wav, sample_rate, target_rate))
    return out


def split_at_pauses(
    wav: np.ndarray, rate: int, max_s: float, frame_s: float = 0.2
) -> list[np.ndarray]:
    """Cut audio longer than ``max_s`` at the quietest ``frame_s`` window of each stretch.

    Each cut is searched in the second half of the allowed span, so chunks are between
    ``max_s / 2`` and ``max_s`` long (the last may be shorter) and, with speech that has
    pauses, cuts fall in a pause instead of inside a word.
    """
    limit, frame = int(max_s * rate), max(1, int(frame_s * rate))
    chunks, start = [], 0
    while wav.size - start > limit:
        span = wav[start + limit // 2 : start + limit]
        n = span.size // frame
        energy = (span[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
        cut = start + limit // 2 + int(np.argmin(energy)) * frame + frame // 2
        chunks.append(wav[start:cut])
        start = cut
    chunks.append(wav[start:])
    return chunks


class PocketSphinxASR:
    """PocketSphinx 5 at 16 kHz with a cached mini-world domain LM (or the generic one)."""

    sample_rate = 16000

    def __init__(
        self,
        use_domain_lm: bool = True,
        extra_text_files: list[str] | None = None,
        seed_text: bool = True,
        lm_dir: str | None = None,
        lm_weight: float | None = None,
        beam: float | None = None,
        max_segment_s: float = 30.0,
        silence_peak: float = 1e-3,
        decoder_options: dict[str, Any] | None = None,
    ) -> None:
        """Args.

        use_domain_lm: decode with a trigram LM of the seed texts (+ ``extra_text_files``)
            instead of the wheel's generic ``en-us.lm.bin``.
        extra_text_files: more LM text, one sentence or passage per line.
        seed_text: include the seed contents and replies in the LM; False builds it from
            ``extra_text_files`` alone (held-out evaluation, another domain).
        lm_dir: cache of built LMs (default ``~/.cache/paras2s/asr``, see ``lm.py``).
        lm_weight: pocketsphinx ``lw`` (default 6.5); ``beam``: its ``beam`` (1e-48).
        max_segment_s: longer audio is cut at pauses and decoded chunk by chunk.
        silence_peak: inputs whose peak is below this return ``""`` undecoded (the
            generic model hears "dog" in digital silence); 1e-3 is -60 dBFS.
        decoder_options: any other ``pocketsphinx.Config`` parameter, e.g. ``{"wip": 0.5}``.
        """
        if max_segment_s <= 1:
            raise ValueError(f"max_segment_s must be > 1 second, got {max_segment_s}")
        self.use_domain_lm = use_domain_lm
        self.extra_text_files = list(extra_text_files or [])
        self.seed_text = seed_text
        self.lm_dir = lm_dir
        self.max_segment_s = max_segment_s
        self.silence_peak = silence_peak
        self.options = dict(decoder_options or {})
        if lm_weight is not None:
            self.options["lw"] = lm_weight
        if beam is not None:
            self.options["beam"] = beam
        self._lm: DomainLM | None = None
        self._decoder = None  # created on first use; never pickled (a C object)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_decoder"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def domain_lm(self) -> DomainLM | None:
        """The domain LM (built or loaded from the cache on first access); None if unused."""
        if self.use_domain_lm and self._lm is None:
            texts = mini_world_text(self.extra_text_files, seed=self.seed_text)
            self._lm = build_domain_lm(texts, self.lm_dir)
        return self._lm

    def _get_decoder(self):  # -> pocketsphinx.Decoder (imported lazily)
        if self._decoder is None:
            from pocketsphinx import Decoder

            kwargs: dict[str, Any] = {"samprate": self.sample_rate, "loglevel": "FATAL"}
            if (lm := self.domain_lm) is not None:
                kwargs.update(lm=str(lm.lm_path), dict=str(lm.dict_path))
            kwargs.update(self.options)
            try:
                self._decoder = Decoder(**kwargs)
            except (KeyError, ValueError, RuntimeError) as err:  # KeyError: unknown option
                raise ValueError(
                    f"pocketsphinx rejected decoder options {self.options}: {err}; "
                    "see `pocketsphinx.Config().describe()` for valid names"
                ) from None
        return self._decoder

    def _decode(self, wav: np.ndarray) -> str:
        decoder, words = self._get_decoder(), []
        for chunk in split_at_pauses(wav, self.sample_rate, self.max_segment_s):
            if float(np.abs(chunk).max()) < self.silence_peak:
                continue  # a silent stretch of long audio: same rule as a silent input
            pcm = (np.clip(chunk, -1.0, 1.0) * 32767).astype("<i2").tobytes()
            decoder.start_utt()
            decoder.process_raw(pcm, no_search=False, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
            if hyp is not None and hyp.hypstr:
                words.append(hyp.hypstr)
        return " ".join(words)

    def transcribe(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[str]:
        """Transcribe each input (any length; see the module doc for bad input)."""
        prepared = prepare_audio(wavs, sample_rate, self.sample_rate, self.silence_peak)
        with self._lock:
            return ["" if wav is None else self._decode(wav) for wav in prepared]


class WhisperASR:
    """Whisper through ``transformers``: batched, long-form beyond 30 s, loaded lazily."""

    sample_rate = 16000

    def __init__(
        self,
        model: str | None = "openai/whisper-large-v3",
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
        language: str | None = "en",
        task: str = "transcribe",
        num_beams: int = 1,
        max_new_tokens: int | None = None,
        local_files_only: bool | None = None,
        silence_peak: float = 1e-3,
    ) -> None:
        """Args.

        model: local directory or hub id, loaded on the first ``transcribe`` (never here).
        device / dtype: where and in which precision (``"float16"``, ``"bfloat16"``) to run.
        batch_size: inputs per ``generate`` call (sorted by length to pad little).
        language / task: Whisper's prompt tokens; ignored by English-only checkpoints.
        max_new_tokens: cap per 30 s window (default: the generation config's).
        local_files_only: None follows ``HF_HUB_OFFLINE``; True never touches the network.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name = model
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        self.language, self.task, self.num_beams = language, task, num_beams
        self.max_new_tokens, self.local_files_only = max_new_tokens, local_files_only
        self.silence_peak = silence_peak
        self._model = self._processor = None

    @classmethod
    def from_components(cls, model: Any, processor: Any, **kwargs: Any) -> WhisperASR:
        """Wrap an in-memory ``WhisperForConditionalGeneration`` and ``WhisperProcessor``."""
        asr = cls(model=None, **kwargs)
        asr._model, asr._processor = model.eval(), processor
        return asr

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.model_name is not None:  # reloadable by name: don't pickle gigabytes
            state["_model"] = state["_processor"] = None
        return state

    def _load(self) -> None:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        kw = {} if self.local_files_only is None else {"local_files_only": self.local_files_only}
        name = str(self.model_name)
        if name.startswith(("/", ".", "~")) and not Path(name).expanduser().is_dir():
            raise FileNotFoundError(
                f"Whisper model directory {name!r} does not exist: pass a directory holding "
                "a saved model and processor (save_pretrained), or a hub id"
            )
        try:
            self._processor = WhisperProcessor.from_pretrained(name, **kw)
            self._model = WhisperForConditionalGeneration.from_pretrained(
                name, dtype=getattr(torch, self.dtype), **kw
            )
        except OSError as err:
            raise OSError(
                f"Whisper model {self.model_name!r} is not available here ({err}). Pass a "
                "local directory as model=..., or download it once where there is internet "
                f"(`hf download {self.model_name}`); HF_HUB_OFFLINE=1 forbids downloads."
            ) from None
        self._model.to(self.device).eval()

    def transcribe(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[str]:
        """Transcribe each input; batches of ``batch_size``, long-form past 30 s."""
        prepared = prepare_audio(wavs, sample_rate, self.sample_rate, self.silence_peak)
        todo = sorted((i for i, w in enumerate(prepared) if w is not None),
                      key=lambda i: prepared[i].size)  # fmt: skip
        out = [""] * len(prepared)
        if todo and self._model is None:
            self._load()
        for b in range(0, len(todo), self.batch_size):
            idx = todo[b : b + self.batch_size]
            texts = self._generate([prepared[i] for i in idx])
            for i, text in zip(idx, texts, strict=True):
                out[i] = text.strip()
        return out

    def _generate(self, batch: list[np.ndarray]) -> list[str]:
        import torch

        fe = self._processor.feature_extractor
        long_form = max(w.size for w in batch) > fe.n_samples
        # Long form: full-length features + attention mask make generate() walk the audio
        # in 30 s windows (sequential decoding with timestamps); short form: pad to 30 s.
        pad = {"truncation": False, "padding": "longest"} if long_form else {}
        feats = fe(batch, sampling_rate=self.sample_rate, return_tensors="pt",
                   return_attention_mask=True, **pad)  # fmt: skip
        gen_cfg = self._model.generation_config
        kwargs: dict[str, Any] = {"num_beams": self.num_beams, "return_timestamps": long_form}
        if getattr(gen_cfg, "is_multilingual", True) and hasattr(gen_cfg, "lang_to_id"):
            kwargs.update(language=self.language, task=self.task)
        if self.max_new_tokens is not None:
            kwargs["max_new_tokens"] = self.max_new_tokens
        with torch.inference_mode():
            ids = self._model.generate(
                feats.input_features.to(self._model.device, self._model.dtype),
                attention_mask=feats.attention_mask.to(self._model.device),
                **kwargs,
            )
        ids = ids["sequences"] if isinstance(ids, dict) else ids
        return self._processor.batch_decode(ids, skip_special_tokens=True)


def main(argv: list[str] | None = None) -> None:
    """Transcribe audio files with the embedded recogniser."""
    from paras2s_pl.audio.io import decode_audio

    parser = argparse.ArgumentParser(description="Transcribe audio files (PocketSphinx).")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--generic", action="store_true", help="generic LM, not the domain LM")
    args = parser.parse_args(argv)
    asr = PocketSphinxASR(use_domain_lm=not args.generic)
    for path in args.files:
        with open(path, "rb") as f:
            wav, sr = decode_audio(f.read())
        print(f"{path}\t{asr.transcribe([to_mono(wav)], sr)[0]}")


if __name__ == "__main__":
    main()
