"""Neural audio codecs behind :class:`~.codec_base.AudioCodec`: Mimi, Kimi-Audio.

**MimiCodec** wraps ``transformers.MimiModel`` (Kyutai's Mimi: 24 kHz, 12.5 Hz frames, a
split RVQ whose first codebook is the distilled "semantic" one). The LM's audio stream is
one token per position, so the first ``K = num_codebooks`` codebooks are interleaved
frame-major, codebook ``k``'s ids offset by ``k * codebook_size``::

    stream = [c0[0], c1[0] + S, …, c{K-1}[0] + (K-1)S,  c0[1], c1[1] + S, …]   (S = codebook_size)

so ``vocab_size = K * S`` and ``frame_rate = 12.5 * K`` tokens per second; position ``i``
holds codebook ``i % K`` and must lie in ``[k*S, (k+1)*S)``. ``K = 1`` keeps only the
semantic codebook (coarse, mostly content); more codebooks add acoustic detail.

**KimiAudioCodec** adapts Kimi-Audio's own tokenizer and detokenizer (package
``kimia_infer`` from github.com/MoonshotAI/Kimi-Audio, not on PyPI):

- tokenizer: GLM-4-Voice Whisper-VQ (``Glm4Tokenizer(tokenizer_path).tokenize(speech=,
  sr=16000)``), 16 kHz in, 12.5 Hz out, codes ``0..16383``; ``tokenizer_path`` is a local
  snapshot of ``THUDM/glm-4-voice-tokenizer`` (config.json, model weights, preprocessor).
- detokenizer: ``kimia_infer.models.detokenizer.get_audio_detokenizer(path)`` on a local
  Kimi-Audio checkpoint directory (its ``audio_detokenizer/`` and ``vocoder/`` folders):
  codes ×4 → flow-matching mel → BigVGAN, 24 kHz out, streamed in chunks of 30 codes. It
  compiles CUDA extensions on first use and expects a GPU.

Relation to the LM side: the LM sees audio id ``code + 152064`` (``kimia_token_offset``);
its audio head has 16896 outputs, the 16384 codes plus the control ids the audio stream
also emits (blank, media end, message end). Those belong to the LM; the codec's
``vocab_size`` is 16384 and :meth:`KimiAudioCodec.decode` takes bare codes.

Nothing here downloads by default: ``MimiCodec("kyutai/mimi")`` fetches only when the
hub is reachable and a config names it; tests use :func:`tiny_mimi_model`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from paras2s_pl.audio.codec_base import Audio, BatchLoops, check_tokens, prepare_input
from paras2s_pl.audio.io import resample

MIMI_FRAME_RATE = 12.5  # Mimi frames per second (24 kHz / 1920)


class MimiCodec(BatchLoops):
    """Mimi codec with ``num_codebooks`` codebooks interleaved into one stream (see module)."""

    def __init__(self, model: str | None = None, num_codebooks: int = 1,
                 device: str = "cpu") -> None:  # fmt: skip
        """Store the settings; the model loads on first use.

        Args:
            model: Local directory or hub id (``kyutai/mimi``) of a Mimi checkpoint; no
                default, so nothing is fetched unless a config names one. None only with
                :meth:`from_model`.
            num_codebooks: How many of Mimi's RVQ codebooks form the stream (1 = semantic).
            device: Torch device for the model.
        """
        if num_codebooks < 1:
            raise ValueError(f"num_codebooks must be >= 1, got {num_codebooks}")
        self.model_name, self.num_codebooks, self.device = model, int(num_codebooks), device
        self._model: Any = None

    @classmethod
    def from_model(cls, model: Any, num_codebooks: int = 1, device: str = "cpu") -> MimiCodec:
        """Wrap an in-memory ``MimiModel`` (tests: :func:`tiny_mimi_model`)."""
        self = cls(None, num_codebooks, device)
        self._model = model
        self._check_model()
        return self

    @property
    def model(self) -> Any:
        """The ``MimiModel`` (eval mode, on ``device``), loaded on first access."""
        if self._model is None:
            if self.model_name is None:
                raise ValueError(
                    "MimiCodec needs model= a local Mimi checkpoint directory or a hub id "
                    "(kyutai/mimi), or an in-memory model via MimiCodec.from_model(model)"
                )
            from transformers import MimiModel

            try:
                self._model = MimiModel.from_pretrained(self.model_name)
            except (OSError, ValueError) as err:  # offline hub id, bad path or repo name
                raise OSError(
                    f"cannot load Mimi model {self.model_name!r} ({err}). Pass a local "
                    "directory holding config.json and model.safetensors (a snapshot of the "
                    "hub repo kyutai/mimi), or run where the Hugging Face hub is reachable."
                ) from err
            self._check_model()
        return self._model

    def _check_model(self) -> None:
        cfg = self._model.config
        if not cfg.num_semantic_quantizers <= self.num_codebooks <= cfg.num_quantizers:
            raise ValueError(
                f"num_codebooks={self.num_codebooks} outside what the Mimi model offers: "
                f"{cfg.num_semantic_quantizers}..{cfg.num_quantizers}"
            )
        self._model = self._model.to(self.device).eval()

    @property
    def codebook_size(self) -> int:
        """Ids per codebook (2048 for kyutai/mimi)."""
        return int(self.model.config.codebook_size)

    @property
    def vocab_size(self) -> int:
        """``num_codebooks * codebook_size``."""
        return self.num_codebooks * self.codebook_size

    @property
    def frame_rate(self) -> float:
        """Stream tokens per second: 12.5 Mimi frames × ``num_codebooks``."""
        return float(self.model.config.frame_rate) * self.num_codebooks

    @property
    def sample_rate(self) -> int:
        """Mimi's audio rate (24 kHz): input is resampled to it, output comes at it."""
        return int(self.model.config.sampling_rate)

    @torch.inference_mode()
    def encode(self, wav: np.ndarray, sample_rate: int) -> torch.Tensor:
        """Audio → ``ceil(seconds * 12.5) * num_codebooks`` interleaved ids (CPU int64)."""
        x = resample(prepare_input(wav, "wav passed to MimiCodec.encode"), sample_rate,
                     self.sample_rate)  # fmt: skip
        inp = torch.from_numpy(np.ascontiguousarray(x))[None, None].to(self.device)
        codes = self.model.encode(inp, num_quantizers=self.num_codebooks).audio_codes
        codes = codes[0].T.cpu()  # (frames, K)
        offsets = torch.arange(self.num_codebooks) * self.codebook_size
        return (codes + offsets).reshape(-1).long()

    def split(self, tokens: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Stream ids → Mimi codes ``(K, frames)``; ValueError names misplaced ids."""
        t = check_tokens(tokens, self.vocab_size)
        k, size = self.num_codebooks, self.codebook_size
        if t.numel() % k:
            raise ValueError(f"{t.numel()} tokens is not a multiple of num_codebooks={k}: "
                             "the stream holds whole frames of K codebooks")  # fmt: skip
        book = torch.arange(t.numel()) % k
        wrong = (t // size) != book
        if bool(wrong.any()):
            pos = wrong.nonzero().flatten()[:8].tolist()
            raise ValueError(
                f"ids {t[pos].tolist()} at positions {pos} are not in their codebook's range: "
                f"position i must hold codebook i % {k}, ids [k*{size}, (k+1)*{size})"
            )
        return (t - book * size).reshape(-1, k).T

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor | Sequence[int], text: str | None = None) -> Audio:
        """Interleaved ids → ``(wav, 24000)``; ``text`` is ignored (Mimi is text-free)."""
        codes = self.split(tokens)
        if codes.shape[1] == 0:
            return np.zeros(0, np.float32), self.sample_rate
        audio = self.model.decode(codes[None].to(self.device)).audio_values
        return audio[0, 0].float().cpu().numpy(), self.sample_rate


def tiny_mimi_model(num_quantizers: int = 4, codebook_size: int = 64, seed: int = 0) -> Any:
    """A randomly initialised, tiny ``MimiModel`` (~130 k parameters) for tests and demos.

    Keeps Mimi's real strides (24 kHz, 12.5 Hz frames) and shrinks everything else. The
    codebooks are randomised too: Mimi initialises them to zeros, which maps all audio
    to code 0.
    """
    from transformers import MimiConfig, MimiModel

    config = MimiConfig(
        hidden_size=32, num_filters=4, codebook_size=codebook_size, codebook_dim=16,
        num_quantizers=num_quantizers, vector_quantization_hidden_dimension=16,
        upsample_groups=32, num_hidden_layers=1, intermediate_size=64,
        num_attention_heads=2, num_key_value_heads=2, sliding_window=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = MimiModel(config).eval()
    for name, buf in model.named_buffers():
        if name.endswith("codebook.embed_sum"):
            buf.normal_()
    for module in model.modules():
        if hasattr(module, "_embed"):
            module._embed = None  # cached embed_sum / usage: recompute
    return model


class KimiAudioCodec(BatchLoops):
    """Adapter slot for Kimi-Audio's tokenizer and detokenizer (see the module docstring)."""

    frame_rate: float = 12.5
    vocab_size: int = 16384  # GLM-4-Voice tokenizer codes
    sample_rate: int = 24000  # detokenizer output (BigVGAN)
    input_rate: int = 16000  # tokenizer input (Whisper)
    lm_token_offset: int = 152064  # LM audio id = code + offset (LM side)

    def __init__(self, tokenizer_path: str | None = None, detokenizer_path: str | None = None,
                 device: str = "cuda") -> None:  # fmt: skip
        """Store the paths; each model loads on first use (errors name the missing part).

        Args:
            tokenizer_path: Local snapshot of ``THUDM/glm-4-voice-tokenizer`` (for encode).
            detokenizer_path: Local Kimi-Audio checkpoint directory (for decode).
            device: Torch device; the detokenizer needs CUDA.
        """
        self.tokenizer_path, self.detokenizer_path, self.device = (
            tokenizer_path, detokenizer_path, device)  # fmt: skip
        self._tokenizer: Any = None
        self._detokenizer: Any = None

    @staticmethod
    def _require(path: str | None, what: str, holds: str) -> str:
        if path is None or not os.path.isdir(path):
            raise FileNotFoundError(
                f"KimiAudioCodec needs {what} = a local directory holding {holds}; got {path!r}"
            )
        return path

    @staticmethod
    def _import(module: str) -> Any:
        import importlib

        try:
            return importlib.import_module(module)
        except ImportError as err:
            raise ImportError(
                f"KimiAudioCodec needs the `kimia_infer` package ({module}: {err}): clone "
                "github.com/MoonshotAI/Kimi-Audio, install its requirements and put it on "
                "PYTHONPATH; the embedded default is paras2s_pl.audio.codec.ProsodyCodec"
            ) from err

    @property
    def tokenizer(self) -> Any:
        """``Glm4Tokenizer`` on ``device``, loaded on first use."""
        if self._tokenizer is None:
            path = self._require(self.tokenizer_path, "tokenizer_path",
                                 "the THUDM/glm-4-voice-tokenizer files")  # fmt: skip
            mod = self._import("kimia_infer.models.tokenizer.glm4_tokenizer")
            self._tokenizer = mod.Glm4Tokenizer(path).to(self.device)
        return self._tokenizer

    @property
    def detokenizer(self) -> Any:
        """Kimi-Audio's flow-matching + BigVGAN detokenizer, loaded on first use."""
        if self._detokenizer is None:
            holds = "a Kimi-Audio checkpoint (audio_detokenizer/, vocoder/)"
            path = self._require(self.detokenizer_path, "detokenizer_path", holds)
            mod = self._import("kimia_infer.models.detokenizer")
            self._detokenizer = mod.get_audio_detokenizer(path)
        return self._detokenizer

    @torch.inference_mode()
    def encode(self, wav: np.ndarray, sample_rate: int) -> torch.Tensor:
        """Audio → GLM-4-Voice codes at 12.5 Hz (input resampled to 16 kHz)."""
        x = resample(prepare_input(wav, "wav passed to KimiAudioCodec.encode"), sample_rate,
                     self.input_rate)  # fmt: skip
        tokenizer = self.tokenizer
        codes = tokenizer.tokenize(speech=torch.from_numpy(x)[None], sr=self.input_rate)
        return codes.reshape(-1).long().cpu()

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor | Sequence[int], text: str | None = None) -> Audio:
        """Codes → 24 kHz audio, streamed in chunks of 30 codes; ``text`` is ignored."""
        t = check_tokens(tokens, self.vocab_size)
        detok = self.detokenizer
        if t.numel() == 0:
            return np.zeros(0, np.float32), self.sample_rate
        detok.clear_states()
        chunks, codes = [], t[None].to(self.device)
        for start in range(0, codes.shape[1], 30):
            chunks.append(detok.detokenize_streaming(
                codes[:, start : start + 30], is_final=start + 30 >= codes.shape[1],
                upsample_factor=4))  # fmt: skip
        wav = torch.cat(chunks, dim=-1).reshape(-1)
        return wav.float().cpu().numpy(), self.sample_rate
