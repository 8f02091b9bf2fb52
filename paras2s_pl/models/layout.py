"""The dual-stream layout of one spoken dialogue turn (Kimi-Audio's; the rules below).

Every position holds an audio-stream id and a text-stream id (shared id space of
:class:`~paras2s_pl.models.dual_stream.DualStreamConfig`; codec codes enter as
``audio_offset + code``). With ``d = cfg.audio_delay``, query codes ``q…``, response text ``t…``
and response codes ``c…``::

    prompt   audio: user_start media_begin q… media_end ctd msg_end assistant_start
             text:  blank      blank       (blank…) blank   blank blank blank
    response audio: blank×d c… audio_end blank…
             text:  t… text_eos blank…

The shorter response stream is padded with ``blank``. This is Kimi-Audio's layout; its own
inference prompt leaves the text stream blank under the query audio, while the paper's policy
hears the transcript ``t_i`` too (eq. 2): ``query_text_ids`` writes it on the text stream from
the first code position, one token per position, the rest blank; a transcript longer than the
code span is cut (``Example.query_text_truncated``). Whether a policy gets it is the policy's
recorded setting (:mod:`paras2s_pl.models.speech_policy`).

**Labels** (our choice: label tensors, not masks) are *unshifted*, HF style: ``labels[t]`` is
the id at position t when it carries loss, else ``-100`` (:data:`IGNORE_INDEX`). Loss sits only
on real response tokens: text tokens + ``text_eos`` on the text stream, codes + ``audio_end``
on the audio stream; never on blanks, markers or the query. A loss compares
``logits[:, t-1]`` with ``labels[:, t]`` (``F.cross_entropy(logits[:, :-1].transpose(1, 2),
labels[:, 1:], ignore_index=-100)``): the text head with ``text_labels``, the audio head
with ``audio_labels``.

``max_len`` cuts the response (never the prompt) and sets ``Example.truncated``; a prompt
longer than ``max_len`` is an error. :func:`collate` right-pads for training and left-pads
(``left_pad=True``) for generation prompts from :func:`build_prompt`. Usage::

    cfg = model.config
    q_codes, r_codes = codec.encode(q_wav, sr), codec.encode(r_wav, sr)
    ex = build_example(q_codes, tok(reply)["input_ids"], r_codes, cfg)
    batch = collate([ex, ...], pad_id=cfg.text_blank_id)  # training
    prompts = collate([build_prompt(codes, cfg), ...], cfg.text_blank_id, left_pad=True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from paras2s_pl.models.dual_stream import DualStreamConfig

IGNORE_INDEX = -100


@dataclass
class Example:
    """One turn in dual-stream form; all tensors are 1-D LongTensors of the same length."""

    audio_ids: torch.Tensor
    text_ids: torch.Tensor
    audio_labels: torch.Tensor  # -100 where no loss
    text_labels: torch.Tensor  # -100 where no loss
    prompt_len: int  # the response starts here
    truncated: bool = False  # response cut by max_len
    query_text_truncated: bool = False  # query transcript longer than the query codes

    def __len__(self) -> int:
        return int(self.audio_ids.numel())


def _long(x: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    if x is None:
        return torch.zeros(0, dtype=torch.long)
    return torch.as_tensor(x, dtype=torch.long).reshape(-1)


def build_prompt(
    query_codes: Sequence[int] | torch.Tensor,
    cfg: DualStreamConfig,
    query_text_ids: Sequence[int] | torch.Tensor | None = None,
) -> Example:
    """The prompt part only (labels all -100): what :func:`generate` continues from.

    Args:
        query_codes: codec codes ``[0, cfg.audio_vocab_size)`` of the spoken query.
        cfg: the model config (ids, offset).
        query_text_ids: optional transcript tokens for the text stream (module docstring).
    """
    codes = cfg.codes_to_ids(_long(query_codes))
    n = codes.numel()
    audio = torch.cat(
        [
            torch.tensor([cfg.user_start_id, cfg.media_begin_id]),
            codes,
            torch.tensor(
                [cfg.media_end_id, cfg.speech_ctd_id, cfg.msg_end_id, cfg.assistant_start_id]
            ),
        ]
    )
    text = torch.full_like(audio, cfg.text_blank_id)
    query_text = _long(query_text_ids)
    cut = query_text.numel() > n
    query_text = query_text[:n]
    text[2 : 2 + query_text.numel()] = query_text
    ignore = torch.full_like(audio, IGNORE_INDEX)
    return Example(audio, text, ignore, ignore.clone(), len(audio), False, cut)


def build_example(
    query_codes: Sequence[int] | torch.Tensor,
    response_text_ids: Sequence[int] | torch.Tensor,
    response_codes: Sequence[int] | torch.Tensor,
    cfg: DualStreamConfig,
    query_text_ids: Sequence[int] | torch.Tensor | None = None,
    max_len: int | None = None,
) -> Example:
    """Prompt + response of one training turn, with labels (see the module docstring).

    Args:
        query_codes: codec codes of the query audio.
        response_text_ids: tokenizer ids of the response text (without ``text_eos``); may be
            empty (the text stream is then ``text_eos`` + blanks).
        response_codes: codec codes of the response audio (without the end token).
        cfg: the model config.
        query_text_ids: optional query transcript on the text stream.
        max_len: cut the response so the whole example has at most this many positions.
    """
    prompt = build_prompt(query_codes, cfg, query_text_ids)
    text = _long(response_text_ids)
    codes = cfg.codes_to_ids(_long(response_codes))
    if text.numel() and (text.min() < 0 or text.max() >= cfg.text_vocab_size):
        raise ValueError(
            f"response_text_ids span [{int(text.min())}, {int(text.max())}] outside the text ids "
            f"[0, text_vocab_size={cfg.text_vocab_size}); was the right tokenizer used?"
        )
    d, blank = cfg.audio_delay, cfg.text_blank_id
    text_stream = torch.cat([text, torch.tensor([cfg.text_eos_id])])
    audio_stream = torch.cat([torch.full((d,), blank), codes, torch.tensor([cfg.audio_end_id])])
    length = max(text_stream.numel(), audio_stream.numel())
    resp_text = torch.full((length,), blank)
    resp_audio = torch.full((length,), blank)
    resp_text[: text_stream.numel()] = text_stream
    resp_audio[: audio_stream.numel()] = audio_stream
    text_labels = torch.full((length,), IGNORE_INDEX)
    audio_labels = torch.full((length,), IGNORE_INDEX)
    text_labels[: text_stream.numel()] = text_stream
    audio_labels[d : audio_stream.numel()] = audio_stream[d:]

    truncated = False
    if max_len is not None:
        if prompt.prompt_len >= max_len:
            raise ValueError(
                f"the prompt alone has {prompt.prompt_len} positions (query of "
                f"{prompt.prompt_len - 6} codes) but max_len={max_len}; raise max_len or "
                f"drop queries longer than {max_len - 7} codes"
            )
        keep = max_len - prompt.prompt_len
        truncated = length > keep
        resp_text, resp_audio = resp_text[:keep], resp_audio[:keep]
        text_labels, audio_labels = text_labels[:keep], audio_labels[:keep]
    return Example(
        audio_ids=torch.cat([prompt.audio_ids, resp_audio]),
        text_ids=torch.cat([prompt.text_ids, resp_text]),
        audio_labels=torch.cat([prompt.audio_labels, audio_labels]),
        text_labels=torch.cat([prompt.text_labels, text_labels]),
        prompt_len=prompt.prompt_len,
        truncated=truncated,
        query_text_truncated=prompt.query_text_truncated,
    )


def collate(
    examples: Sequence[Example], pad_id: int, left_pad: bool = False
) -> dict[str, torch.Tensor]:
    """Pad examples into a batch.

    Returns ``audio_ids``, ``text_ids``, ``audio_labels``, ``text_labels`` (B, L), padded with
    ``pad_id`` / -100; ``attention_mask`` (B, L) long, 1 = real; ``prompt_lens`` and
    ``lengths`` (B,) of the unpadded examples; ``truncated`` (B,) bool. Right padding for
    training; ``left_pad=True`` for generation prompts (every row then ends at column L-1 and
    the response of every row starts at column L).
    """
    if not examples:
        raise ValueError("collate: no examples")
    width = max(len(ex) for ex in examples)
    batch = {
        "audio_ids": torch.full((len(examples), width), pad_id, dtype=torch.long),
        "text_ids": torch.full((len(examples), width), pad_id, dtype=torch.long),
        "audio_labels": torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long),
        "text_labels": torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long),
        "attention_mask": torch.zeros((len(examples), width), dtype=torch.long),
    }
    for row, ex in enumerate(examples):
        cols = slice(width - len(ex), width) if left_pad else slice(0, len(ex))
        batch["audio_ids"][row, cols] = ex.audio_ids
        batch["text_ids"][row, cols] = ex.text_ids
        batch["audio_labels"][row, cols] = ex.audio_labels
        batch["text_labels"][row, cols] = ex.text_labels
        batch["attention_mask"][row, cols] = 1
    batch["prompt_lens"] = torch.tensor([ex.prompt_len for ex in examples])
    batch["lengths"] = torch.tensor([len(ex) for ex in examples])
    batch["truncated"] = torch.tensor([ex.truncated for ex in examples])
    return batch
