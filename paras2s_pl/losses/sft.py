"""Supervised next-token loss of the dual-stream policy (paper eq. 2), as a pure function.

The two heads are scored on their own stream: the text head (``text_logits``) against the
text stream's labels, the audio head (``audio_logits``) against the audio stream's. Labels
are the layout's (:mod:`paras2s_pl.models.layout`): unshifted, ``-100`` where no loss (the
query, markers, blanks, padding), so the logits at position ``t - 1`` predict the label at
``t``. Try it::

    python -c "import torch; from paras2s_pl.losses.sft import sft_loss; \
print(sft_loss(torch.zeros(1, 3, 4), torch.zeros(1, 3, 4), \
torch.tensor([[-100, 1, 2]]), torch.tensor([[-100, -100, 3]])))"
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from paras2s_pl.models.layout import IGNORE_INDEX


def stream_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    denominator: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked-mean next-token CE and accuracy of one stream.

    Only the positions that carry a label are gathered before the softmax, so the float32
    copy is (tokens, V), not (B, T, V) (at V = 168448 the full copy would be gigabytes).

    Args:
        logits: (B, T, V) head output; ``logits[:, t]`` predicts ``labels[:, t + 1]``.
        labels: (B, T) target ids, ``ignore_index`` where no loss.
        ignore_index: label value without loss.
        denominator: Divide the summed CE by this instead of the local token count: with
            several data-parallel ranks, the global count / ranks, so the ranks' averaged
            gradients are those of the mean over all their tokens (as on one rank).

    Returns:
        ``(loss, accuracy, count)``: scalar mean CE over the labelled tokens (0 with a
        gradient path when there are none), scalar argmax accuracy, and the token count.
    """
    target = labels[:, 1:]  # (B, T-1)
    keep = target != ignore_index  # (B, T-1)
    picked = logits[:, :-1][keep].float()  # (N, V)
    target = target[keep]  # (N,)
    count = keep.sum()
    denom = count.clamp(min=1)
    loss_denom = denom if denominator is None else torch.as_tensor(denominator).clamp(min=1e-9)
    loss = F.cross_entropy(picked, target, reduction="sum") / loss_denom  # empty -> 0, not NaN
    with torch.no_grad():
        acc = (picked.argmax(-1) == target).sum() / denom
    return loss, acc, count


def sft_loss(
    text_logits: torch.Tensor,
    audio_logits: torch.Tensor,
    text_labels: torch.Tensor,
    audio_labels: torch.Tensor,
    text_weight: float = 1.0,
    audio_weight: float = 1.0,
    denominators: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""Weighted sum of the two streams' masked-mean next-token cross-entropies.

    With :math:`M_s = \{(b, t) : t \ge 1,\ y^s_{b,t} \ne -100\}` the labelled positions of
    stream :math:`s \in \{text, audio\}` and :math:`z^s` its head's logits::

        L_s   = 1/|M_s| * sum_{(b,t) in M_s} -log softmax(z^s[b, t-1])[y^s[b, t]]
        acc_s = 1/|M_s| * sum_{(b,t) in M_s} [argmax z^s[b, t-1] == y^s[b, t]]
        L     = text_weight * L_text + audio_weight * L_audio

    Each stream is a mean over its own tokens (the batch's tokens pooled, not a mean of
    per-sample means), so a long response weighs more than a short one, as in plain LM
    training. A stream without labelled tokens contributes 0.

    Args:
        text_logits: (B, T, V) text head (trunk ``lm_head``).
        audio_logits: (B, T, V) audio head (MIMO ``mimo_output``).
        text_labels: (B, T) text-stream labels, ``-100`` where no loss.
        audio_labels: (B, T) audio-stream labels, ``-100`` where no loss.
        text_weight: weight of the text loss.
        audio_weight: weight of the audio loss.
        denominators: ``(text, audio)`` token counts to divide by instead of this batch's
            (:func:`stream_cross_entropy`'s ``denominator``; data-parallel training).

    Returns:
        ``(loss, stats)``: the scalar loss (with gradients) and detached ``loss``,
        ``loss_text``, ``loss_audio``, ``acc_text``, ``acc_audio``, ``tokens_text``,
        ``tokens_audio``.
    """
    text_denom, audio_denom = denominators if denominators is not None else (None, None)
    loss_text, acc_text, n_text = stream_cross_entropy(
        text_logits, text_labels, denominator=text_denom
    )
    loss_audio, acc_audio, n_audio = stream_cross_entropy(
        audio_logits, audio_labels, denominator=audio_denom
    )
    loss = text_weight * loss_text + audio_weight * loss_audio
    stats = {
        "loss": loss.detach(),
        "loss_text": loss_text.detach(),
        "loss_audio": loss_audio.detach(),
        "acc_text": acc_text,
        "acc_audio": acc_audio,
        "tokens_text": n_text,
        "tokens_audio": n_audio,
    }
    return loss, stats
