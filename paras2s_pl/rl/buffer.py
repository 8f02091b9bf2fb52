"""The rollout buffer of GRPO: one rollout's tensors, split into micro-batches by whole responses.

Everything the update needs is fixed at rollout time and stored here, so every micro-batch
recomputes log-probs on **exactly** the sampled inputs: the full (prompt + response) id
streams and attention mask, the loss masks, the advantages, and the sampling-time (old) and
reference log-probs. ``state_dict()`` holds CPU copies (the GRPO checkpoint stores an
unfinished buffer, so a run resumed mid-buffer trains on the same rollout).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

#: Row-wise tensors (first dim = responses); the optional ones may be None.
ROW_FIELDS = (
    "full_audio_ids",
    "full_text_ids",
    "full_attention_mask",
    "audio_mask",
    "text_mask",
    "advantages",
    "old_audio_logprobs",
    "old_text_logprobs",
    "ref_audio_logprobs",
    "ref_text_logprobs",
)


@dataclass
class RolloutBuffer:
    """One rollout (N = B·G responses), ready for the update.

    ``audio_mask``/``text_mask`` (N, T) are the **loss** masks: sampled tokens of the streams
    being trained, of responses with a finite reward. ``denominator`` is the full rollout's
    aggregation denominator (:func:`paras2s_pl.losses.grpo.loss_denominator`), so micro-batch
    losses add up to the rollout's loss.
    """

    rollout: int
    response_start: int
    full_audio_ids: torch.Tensor  # (N, P+T)
    full_text_ids: torch.Tensor  # (N, P+T)
    full_attention_mask: torch.Tensor  # (N, P+T)
    audio_mask: torch.Tensor  # (N, T) bool
    text_mask: torch.Tensor  # (N, T) bool
    advantages: torch.Tensor  # (N,)
    denominator: torch.Tensor  # ()
    old_audio_logprobs: torch.Tensor | None = None  # (N, T); None = on-policy
    old_text_logprobs: torch.Tensor | None = None
    ref_audio_logprobs: torch.Tensor | None = None  # (N, T); None when β = 0
    ref_text_logprobs: torch.Tensor | None = None

    @property
    def num_responses(self) -> int:
        """N."""
        return int(self.advantages.shape[0])

    def micro(self, index: int, count: int) -> RolloutBuffer:
        """Micro-batch ``index`` of ``count`` equal parts of whole responses.

        Trailing response columns without any loss token are trimmed (exact: they are
        masked out of attention and loss).
        """
        n = self.num_responses
        if n % count:
            raise ValueError(f"{n} responses do not split into {count} equal micro-batches")
        rows = slice(index * n // count, (index + 1) * n // count)
        active = (self.audio_mask[rows] | self.text_mask[rows]).any(0)  # (T,)
        last = int(active.nonzero().max()) + 1 if active.any() else 1
        cols, full = slice(0, last), slice(0, self.response_start + last)
        picked = {}
        for name in ROW_FIELDS:
            value = getattr(self, name)
            if value is None:
                picked[name] = None
            elif name.startswith("full_"):
                picked[name] = value[rows, full]
            elif value.ndim == 2:
                picked[name] = value[rows, cols]
            else:
                picked[name] = value[rows]
        return RolloutBuffer(
            rollout=self.rollout,
            response_start=self.response_start,
            denominator=self.denominator,
            **picked,
        )

    def to(self, device: torch.device | str) -> RolloutBuffer:
        """A copy with every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return RolloutBuffer(
            **{k: v.to(device) if torch.is_tensor(v) else v for k, v in moved.items()}
        )

    def state_dict(self) -> dict:
        """CPU copies of every field (for checkpoints)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v.cpu() if torch.is_tensor(v) else v for k, v in values.items()}

    @classmethod
    def from_state_dict(cls, state: dict) -> RolloutBuffer:
        """Inverse of :meth:`state_dict`."""
        return cls(**state)
