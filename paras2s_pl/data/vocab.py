"""What a policy DataModule tells the policy module: its tokenizer and codec (and their sizes).

:class:`~paras2s_pl.data.sft.SFTDataModule` and :class:`~paras2s_pl.data.prompts.PromptDataModule`
mix in :class:`PolicyVocab`; :class:`~paras2s_pl.modules.policy.PolicyModule` reads
``tokenizer``, ``codec``, ``text_vocab_size`` and ``codec_vocab_size`` from it to size and
check the policy.
"""

from __future__ import annotations

from typing import Any, Protocol

from paras2s_pl.audio.codec import ProsodyCodec
from paras2s_pl.models.tokenizer import build_mini_tokenizer, load_tokenizer


class CodecLike(Protocol):
    """The part of :class:`~paras2s_pl.audio.codec.AudioCodec` the policy data uses (config type).

    Parameters are typed ``Any`` on purpose: jsonargparse accepts a ``class_path`` for a
    protocol-typed argument only when the class's annotations equal the protocol's exactly,
    and the codecs' ``encode``/``decode`` annotations differ from ``AudioCodec``'s.
    """

    vocab_size: int

    def encode(self, wav: Any, sample_rate: Any) -> Any:
        """Mono audio → 1-D code tensor."""
        ...

    def decode(self, tokens: Any, text: Any = None) -> Any:
        """Codes (+ text) → ``(wav, sample_rate)``."""
        ...


class PolicyVocab:
    """Tokenizer (lazy) + codec of a policy DataModule; call :meth:`_init_vocab` in ``__init__``."""

    def _init_vocab(
        self, codec: CodecLike | None, tokenizer: str | None, trust_remote_code: bool
    ) -> None:
        codec = ProsodyCodec() if codec is None else codec
        # on the class: a lazy codec's vocab_size may load its model (isinstance would touch it)
        if not all(callable(getattr(type(codec), m, None)) for m in ("encode", "decode")):
            raise TypeError(
                f"codec is a {type(codec).__name__}, not an AudioCodec (encode, decode, "
                "vocab_size); pass e.g. paras2s_pl.audio.codec.ProsodyCodec"
            )
        self.codec = codec
        self.tokenizer_path, self.trust_remote_code = tokenizer, trust_remote_code
        self._tokenizer = None

    @property
    def tokenizer(self):
        """The text tokenizer (loaded on first use; None path = the mini world's)."""
        if self._tokenizer is None:
            if self.tokenizer_path is None:
                self._tokenizer = build_mini_tokenizer()
            else:
                self._tokenizer = load_tokenizer(
                    self.tokenizer_path, trust_remote_code=self.trust_remote_code
                )
        return self._tokenizer

    @property
    def text_vocab_size(self) -> int:
        """``len(tokenizer)``: text ids the data can contain (control tokens included)."""
        return len(self.tokenizer)

    @property
    def codec_vocab_size(self) -> int:
        """Codes the codec emits, ``[0, codec.vocab_size)``."""
        return int(self.codec.vocab_size)
