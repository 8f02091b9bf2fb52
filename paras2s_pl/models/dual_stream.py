"""The speech-to-speech policy: a Kimi-Audio-architecture dual-stream decoder.

Every position carries two ids, one per stream (audio, text); their embeddings from one
shared table are **summed**. A trunk of Qwen2 decoder layers ends in ``norm`` + ``lm_head``
(the **text head**); a **MIMO branch** of ``mimo_layers`` more decoder layers takes the hidden
state after trunk layer ``mimo_transformer_from_layer_index`` and ends in ``mimo_norm`` +
``mimo_output`` (the **audio head**). Optionally (``use_whisper_adaptor``) continuous features
enter at flagged positions as ``(embed(audio_id) + vq_adaptor(feature)) * sqrt(2)``, with
``vq_adaptor`` = Linear → SiLU → Dropout → Linear → LayerNorm, as in Kimi-Audio.

**Id space.** One shared vocabulary of ``vocab_size`` ids::

    [0, text_vocab_size)                          text tokens + control tokens (blank, eos, ...)
    [audio_offset, audio_offset+audio_vocab_size) audio codes: codec code c <-> id audio_offset+c

Both heads output logits over the **whole shared vocabulary** (``vocab_size`` columns), exactly
like the shipped Kimi-Audio checkpoint, whose ``lm_head`` and ``mimo_output`` are both
168448 x 3584. The audio head must reach ids outside the code block: its end token is
``msg_end`` (151645 in Kimi, inside the text range), so a head restricted to the 16896 code ids
could not end a response. Consequently labels and sampled tokens are plain shared ids for both
streams, and ``text_vocab_size`` / ``audio_vocab_size`` describe the *legal ranges* of each
stream (the sampler can restrict each head to them; see :mod:`paras2s_pl.models.sampling`).
Kimi-Audio-7B: text ids [0, 152064), codes at offset 152064, vocab 168448, so 16384 code ids
(the GLM-4-Voice tokenizer's codebook; Kimi's config also names an "audio output vocab" of
16896, which does not fit the 168448-row table and is not a shape of any tensor).
Mini world: the mini tokenizer's ids (3,320 for the word kind, 512 for the BPE; control tokens
0..8) then the codec's codes.

**KV cache.** ``past_key_values`` is one ``transformers.DynamicCache``: layers ``0..N-1`` hold the
trunk, ``N..N+M-1`` the MIMO branch (Kimi-Audio keeps the same content as a pair of caches).

**Padding.** ``attention_mask`` (B, past+T) marks real positions; without ``position_ids`` the
positions are ``cumsum(attention_mask) - 1``, so left-padded prompts get the positions an
unpadded prompt would have (needed for batched generation).

Kimi-Audio checkpoints, :func:`~paras2s_pl.models.kimi_checkpoint.build_policy` and the CLI
live in :mod:`paras2s_pl.models.kimi_checkpoint`: run
``python -m paras2s_pl.models.kimi_checkpoint --summary`` for parameter counts of the tiny and
Kimi-Audio-7B configurations, or ``--convert-kimi SRC DST`` to turn a Kimi-Audio checkpoint
into this class's ``save_pretrained`` format once.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2DecoderLayer,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
)

from paras2s_pl.models.tokenizer import MINI_SPECIAL_IDS

DECODER_LAYER_CLASS = Qwen2DecoderLayer  # FSDP auto-wrap / activation-checkpointing target
SPECIAL_ID_FIELDS = tuple(MINI_SPECIAL_IDS)  # text_blank_id, text_eos_id, ..., speech_ctd_id

# transformers 5.24 renamed the cache keyword of the mask helper and the decoder layers from
# ``past_key_values`` to ``cache`` (the old name warns until 5.40). Read the name the installed
# version takes instead of assuming one, so the policy runs on both sides of the rename.
_MASK_PARAMS = inspect.signature(create_causal_mask).parameters
CACHE_KWARG = "cache" if "cache" in _MASK_PARAMS else "past_key_values"

# Kimi-Audio-7B (MoonshotAI/Kimi-Audio, config.json / modeling_moonshot_kimia.py).
KIMI_SPECIAL_IDS = {
    "text_blank_id": 151666,
    "text_eos_id": 151667,
    "user_start_id": 151670,
    "assistant_start_id": 151671,
    "media_begin_id": 151661,
    "media_end_id": 151663,
    "msg_end_id": 151645,
    "speech_ct_id": 151675,
    "speech_ctd_id": 151676,
}


class DualStreamConfig(PreTrainedConfig):
    """Sizes, MIMO fork, id layout and special ids of a :class:`DualStreamLM`.

    Defaults are the mini world's tiny model (:meth:`tiny`); :meth:`kimi_audio_7b` gives the
    real one. ``mimo_transformer_from_layer_index`` k is 0-based: the MIMO branch reads the
    output of trunk layer k (Kimi: 21 of 0..27). ``audio_end_id`` (default ``msg_end_id``) is
    the token written after the response codes; generation stops on any of
    :attr:`audio_stop_ids` (``msg_end`` or ``media_end``, as Kimi-Audio does). The same
    ``text_blank_id`` is the idle id of both streams (Kimi writes it on the audio stream too).
    """

    model_type = "paras2s_dual_stream"

    vocab_size: int = 776
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    hidden_act: str = "silu"
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_parameters: dict | None = None
    attention_dropout: float = 0.0
    use_cache: bool = True
    tie_word_embeddings: bool = False
    pad_token_id: int | None = None
    # MIMO branch (audio head)
    mimo_layers: int = 2
    mimo_transformer_from_layer_index: int = 2
    # id layout
    text_vocab_size: int = 512
    audio_vocab_size: int = 264
    audio_offset: int = 512
    audio_delay: int = 6
    # control tokens (mini tokenizer ids by default)
    text_blank_id: int = MINI_SPECIAL_IDS["text_blank_id"]
    text_eos_id: int = MINI_SPECIAL_IDS["text_eos_id"]
    user_start_id: int = MINI_SPECIAL_IDS["user_start_id"]
    assistant_start_id: int = MINI_SPECIAL_IDS["assistant_start_id"]
    media_begin_id: int = MINI_SPECIAL_IDS["media_begin_id"]
    media_end_id: int = MINI_SPECIAL_IDS["media_end_id"]
    msg_end_id: int = MINI_SPECIAL_IDS["msg_end_id"]
    speech_ct_id: int = MINI_SPECIAL_IDS["speech_ct_id"]
    speech_ctd_id: int = MINI_SPECIAL_IDS["speech_ctd_id"]
    audio_end_id: int | None = None
    # continuous (Whisper) features
    use_whisper_adaptor: bool = False
    adaptor_input_dim: int = 5120

    def __post_init__(self, **kwargs):
        if self.audio_end_id is None:
            self.audio_end_id = self.msg_end_id
        super().__post_init__(**kwargs)
        self.validate()

    # ---- validation -------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field, its value and the bound it breaks."""
        n, k, m = self.num_hidden_layers, self.mimo_transformer_from_layer_index, self.mimo_layers
        if not 0 <= k < n:
            raise ValueError(
                f"DualStreamConfig: mimo_transformer_from_layer_index={k} must be a trunk layer "
                f"index in [0, num_hidden_layers={n}); lower it or add layers"
            )
        if m < 1:
            raise ValueError(f"DualStreamConfig: mimo_layers={m}; the audio head needs >= 1 layer")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"DualStreamConfig: hidden_size={self.hidden_size} is not a multiple of "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"DualStreamConfig: num_attention_heads={self.num_attention_heads} is not a "
                f"multiple of num_key_value_heads={self.num_key_value_heads}"
            )
        if self.text_vocab_size > self.audio_offset:
            raise ValueError(
                f"DualStreamConfig: audio_offset={self.audio_offset} overlaps the text ids "
                f"[0, text_vocab_size={self.text_vocab_size}); set audio_offset >= text_vocab_size"
            )
        end = self.audio_offset + self.audio_vocab_size
        if end > self.vocab_size:
            raise ValueError(
                f"DualStreamConfig: audio ids end at audio_offset + audio_vocab_size = {end} but "
                f"vocab_size={self.vocab_size}; raise vocab_size to >= {end}"
            )
        if self.audio_delay < 0:
            raise ValueError(f"DualStreamConfig: audio_delay={self.audio_delay} must be >= 0")
        for field in (*SPECIAL_ID_FIELDS, "audio_end_id"):
            value = getattr(self, field)
            if not 0 <= value < self.text_vocab_size:
                raise ValueError(
                    f"DualStreamConfig: {field}={value} is outside the text ids "
                    f"[0, text_vocab_size={self.text_vocab_size})"
                )
        ids = [getattr(self, f) for f in SPECIAL_ID_FIELDS]
        if len(set(ids)) != len(ids):
            raise ValueError(f"DualStreamConfig: special ids must be distinct, got {ids}")

    def check_codec(self, codec_vocab_size: int) -> None:
        """Fail early when a codec's codes do not fit the model's audio-code block."""
        if codec_vocab_size > self.audio_vocab_size:
            raise ValueError(
                f"codec vocabulary ({codec_vocab_size} codes) is larger than the model's audio "
                f"code block (audio_vocab_size={self.audio_vocab_size}); build the model config "
                f"with audio_vocab_size >= {codec_vocab_size} (DualStreamConfig.tiny("
                f"codec_vocab_size={codec_vocab_size})) or use the codec the model was trained with"
            )

    # ---- id helpers --------------------------------------------------------------------
    @property
    def audio_stop_ids(self) -> tuple[int, ...]:
        """Audio-stream ids that end a response (Kimi-Audio: ``msg_end`` and ``media_end``)."""
        return tuple(dict.fromkeys((self.audio_end_id, self.msg_end_id, self.media_end_id)))

    @property
    def special_ids(self) -> dict[str, int]:
        """Control-token ids by field name."""
        return {f: getattr(self, f) for f in (*SPECIAL_ID_FIELDS, "audio_end_id")}

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Codec codes ``[0, audio_vocab_size)`` → shared ids (adds ``audio_offset``)."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.audio_vocab_size):
            raise ValueError(
                f"codec codes span [{int(codes.min())}, {int(codes.max())}] but the model's audio "
                f"block holds [0, audio_vocab_size={self.audio_vocab_size})"
            )
        return codes + self.audio_offset

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Shared ids → codec codes, keeping only ids inside the audio-code block."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        keep = (ids >= self.audio_offset) & (ids < self.audio_offset + self.audio_vocab_size)
        return ids[keep] - self.audio_offset

    # ---- presets -----------------------------------------------------------------------
    @classmethod
    def tiny(
        cls, text_vocab_size: int = 512, codec_vocab_size: int = 264, **overrides
    ) -> DualStreamConfig:
        """The mini world's model: hidden 128, 4 layers, MIMO 2 layers from layer 2, 4/2 heads.

        ``text_vocab_size`` is the text tokenizer's size (``len(tokenizer)``, control tokens
        included, ids as in :data:`paras2s_pl.models.tokenizer.MINI_SPECIAL_IDS`); codec codes
        follow at ``audio_offset = text_vocab_size``.
        """
        fields = dict(
            hidden_size=128,
            intermediate_size=384,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            mimo_layers=2,
            mimo_transformer_from_layer_index=2,
            max_position_embeddings=4096,
            text_vocab_size=text_vocab_size,
            audio_offset=text_vocab_size,
            audio_vocab_size=codec_vocab_size,
            vocab_size=text_vocab_size + codec_vocab_size,
            audio_delay=6,
            **MINI_SPECIAL_IDS,
        )
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def kimi_audio_7b(cls, **overrides) -> DualStreamConfig:
        """Kimi-Audio-7B's architecture (the sizes and ids of its shipped ``config.json``)."""
        fields = dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            rms_norm_eps=1e-6,
            rope_theta=1_000_000.0,
            max_position_embeddings=8192,
            mimo_layers=6,
            mimo_transformer_from_layer_index=21,
            text_vocab_size=152064,
            audio_offset=152064,
            # Kimi's config says kimia_audio_output_vocab=16896, but only 168448 - 152064 =
            # 16384 ids fit the shared table: the GLM-4-Voice tokenizer's 16384 codes.
            audio_vocab_size=16384,
            vocab_size=168448,
            audio_delay=6,  # the class default upstream says 5; shipped config/generation use 6
            use_whisper_adaptor=True,
            adaptor_input_dim=5120,
            **KIMI_SPECIAL_IDS,
        )
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_kimi_config(cls, kimi: Mapping, **overrides) -> DualStreamConfig:
        """Map a Kimi-Audio ``config.json`` dict; absent keys keep the Kimi-Audio-7B values."""
        keys = {
            "hidden_size": "hidden_size",
            "intermediate_size": "intermediate_size",
            "num_hidden_layers": "num_hidden_layers",
            "num_attention_heads": "num_attention_heads",
            "num_key_value_heads": "num_key_value_heads",
            "rms_norm_eps": "rms_norm_eps",
            "rope_theta": "rope_theta",
            "max_position_embeddings": "max_position_embeddings",
            "vocab_size": "vocab_size",
            "kimia_mimo_layers": "mimo_layers",
            "kimia_mimo_transformer_from_layer_index": "mimo_transformer_from_layer_index",
            "kimia_token_offset": "audio_offset",
            "kimia_adaptor_input_dim": "adaptor_input_dim",
            "use_whisper_feature": "use_whisper_adaptor",
            "kimia_media_begin": "media_begin_id",
            "kimia_media_end": "media_end_id",
            "kimia_mimo_audiodelaytokens": "audio_delay",
        }
        fields = {ours: kimi[theirs] for theirs, ours in keys.items() if theirs in kimi}
        if "audio_offset" in fields:
            fields.setdefault("text_vocab_size", fields["audio_offset"])
            fields.setdefault(
                "audio_vocab_size", fields.get("vocab_size", 168448) - fields["audio_offset"]
            )
        fields.update(overrides)
        return cls.kimi_audio_7b(**fields)


# Known to AutoConfig, so AutoTokenizer reading an exported policy's config.json stays quiet
AutoConfig.register(DualStreamConfig.model_type, DualStreamConfig, exist_ok=True)


@dataclass(frozen=True)
class DualStreamOutput:
    """``text_logits`` / ``audio_logits``: (B, T, vocab_size) over shared ids (model dtype).

    ``past_key_values``: the trunk + MIMO cache when ``use_cache``; else None.

    A plain dataclass on purpose, not a ``transformers.utils.ModelOutput``: ModelOutput rewrites
    its subclasses' keyword arguments between releases (5.24 renames ``past_key_values`` to
    ``cache`` in every subclass's ``__init__``), and nothing here needs its tuple/dict behaviour.
    """

    text_logits: torch.Tensor
    audio_logits: torch.Tensor
    past_key_values: Cache | None = None


class WhisperAdaptor(nn.Module):
    """Kimi-Audio's ``vq_adaptor``: Linear → SiLU → Dropout → Linear → LayerNorm (indices 0..4)."""

    def __init__(self, input_dim: int, hidden_size: int, eps: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_dim, hidden_size, bias=True),
            nn.SiLU(),
            nn.Dropout(0.0),
            nn.Linear(hidden_size, hidden_size, bias=True),
            nn.LayerNorm(hidden_size, eps=eps, bias=True),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(…, input_dim) → (…, hidden_size)."""
        return self.layers(features)


class DualStreamLM(PreTrainedModel):
    """Dual-stream decoder with a text head (trunk) and an audio head (MIMO branch).

    Attributes mirror Kimi-Audio's parameter names without its ``model.`` nesting:
    ``embed_tokens``, ``layers``, ``norm``, ``lm_head``, ``mimo_layers``, ``mimo_norm``,
    ``mimo_output``, ``vq_adaptor`` (see :func:`convert_kimi_state_dict`).
    """

    config_class = DualStreamConfig
    config: DualStreamConfig
    base_model_prefix = ""
    main_input_name = "audio_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Qwen2DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    decoder_layer_class = DECODER_LAYER_CLASS

    def __init__(self, config: DualStreamConfig):
        super().__init__(config)
        n = config.num_hidden_layers
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList([Qwen2DecoderLayer(config, i) for i in range(n)])
        self.norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # MIMO layers get cache slots after the trunk's: layer_idx = N + j.
        self.mimo_layers = nn.ModuleList(
            [Qwen2DecoderLayer(config, n + j) for j in range(config.mimo_layers)]
        )
        self.mimo_norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mimo_output = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.vq_adaptor = (
            WhisperAdaptor(config.adaptor_input_dim, config.hidden_size, config.rms_norm_eps)
            if config.use_whisper_adaptor
            else None
        )
        self.rotary_emb = Qwen2RotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        """The shared embedding table."""
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the shared embedding table."""
        self.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        """The text head."""
        return self.lm_head

    def embed(
        self,
        audio_ids: torch.LongTensor,
        text_ids: torch.LongTensor,
        whisper_features: torch.Tensor | None = None,
        feature_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Summed stream embeddings (B, T, H); see the module docstring for the adaptor."""
        audio = self.embed_tokens(audio_ids)
        if whisper_features is not None:
            if self.vq_adaptor is None:
                raise ValueError(
                    "whisper_features given but the config has use_whisper_adaptor=False; "
                    "enable it (and train/load vq_adaptor) or drop the features"
                )
            if feature_mask is None:
                raise ValueError("whisper_features need a feature_mask (B, T) of their positions")
            adapted = self.vq_adaptor(whisper_features.to(audio.dtype))  # (B, T, H)
            mixed = (audio + adapted) * math.sqrt(2.0)
            audio = torch.where(feature_mask.bool().unsqueeze(-1), mixed, audio)
        return audio + self.embed_tokens(text_ids)

    @staticmethod
    def positions_from_mask(attention_mask: torch.Tensor, query_length: int) -> torch.LongTensor:
        """Positions of the last ``query_length`` columns: ``cumsum(mask) - 1`` (pads → 0)."""
        pos = attention_mask.long().cumsum(-1) - 1
        return pos.clamp(min=0)[:, -query_length:]

    def forward(
        self,
        audio_ids: torch.LongTensor,
        text_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool = False,
        whisper_features: torch.Tensor | None = None,
        feature_mask: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> DualStreamOutput:
        """Run both streams; logits at position t predict the ids at t+1.

        Args:
            audio_ids: (B, T) audio-stream shared ids of the new positions.
            text_ids: (B, T) text-stream shared ids of the same positions.
            attention_mask: (B, past+T), 1 = real position; None = all real.
            position_ids: (B, T); default from ``attention_mask`` (or past length + arange).
            past_key_values: cache from a previous call (trunk + MIMO layers).
            use_cache: return the (created or extended) cache.
            whisper_features: (B, T, adaptor_input_dim) continuous features.
            feature_mask: (B, T) bool, where ``whisper_features`` replace the plain embedding.
            logits_to_keep: compute logits for the last n positions only (0 = all).
        """
        if audio_ids.shape != text_ids.shape:
            raise ValueError(
                f"audio_ids {tuple(audio_ids.shape)} != text_ids {tuple(text_ids.shape)}"
            )
        hidden = self.embed(audio_ids, text_ids, whisper_features, feature_mask)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()  # lazy: grows to N + M layers
        if position_ids is None:
            if attention_mask is not None:
                position_ids = self.positions_from_mask(attention_mask, hidden.shape[1])
            else:
                past = past_key_values.get_seq_length() if past_key_values is not None else 0
                position_ids = torch.arange(past, past + hidden.shape[1], device=hidden.device)
                position_ids = position_ids.unsqueeze(0).expand(hidden.shape[0], -1)
        mask = create_causal_mask(
            config=self.config,
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{CACHE_KWARG: past_key_values},
        )
        rope = self.rotary_emb(hidden, position_ids)
        layer_kwargs = dict(
            attention_mask=mask,
            position_ids=position_ids,
            **{CACHE_KWARG: past_key_values},
            use_cache=use_cache,
            position_embeddings=rope,
        )
        mimo_hidden = None
        for i, layer in enumerate(self.layers):
            hidden = layer(hidden, **layer_kwargs)
            if i == self.config.mimo_transformer_from_layer_index:
                mimo_hidden = hidden
        for layer in self.mimo_layers:
            mimo_hidden = layer(mimo_hidden, **layer_kwargs)
        if logits_to_keep:
            hidden, mimo_hidden = hidden[:, -logits_to_keep:], mimo_hidden[:, -logits_to_keep:]
        return DualStreamOutput(
            text_logits=self.lm_head(self.norm(hidden)),
            audio_logits=self.mimo_output(self.mimo_norm(mimo_hidden)),
            past_key_values=past_key_values if use_cache else None,
        )


def count_parameters(config: DualStreamConfig) -> dict[str, int]:
    """Parameter counts by part, computed from the config (no weights allocated)."""
    with torch.device("meta"):
        model = DualStreamLM(config)
    parts = {"total": 0}
    for name, p in model.named_parameters():
        part = name.split(".")[0]
        parts[part] = parts.get(part, 0) + p.numel()
        parts["total"] += p.numel()
    return parts
