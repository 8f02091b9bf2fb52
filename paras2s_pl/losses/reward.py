"""Score-as-token loss of the reward model (paper §4.2), as pure tensor functions.

The reward model reads the judge's score as one character "1".."5" at one position; its
head gives ``logits5`` (B, 5), column k-1 = the logit of the character "k". Training is
cross-entropy against the judge's score (optionally label-smoothed); RL uses the expected
score ``Σ_k p_k · k`` (:func:`expected_score`), a number in [1, 5]. Try it::

    python -c "import torch; from paras2s_pl.losses.reward import score_token_loss; \
print(score_token_loss(torch.zeros(2, 5), torch.tensor([1, 5])))"
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: The five score values; column ``k - 1`` of ``logits5`` is score ``k``.
SCORE_VALUES = (1, 2, 3, 4, 5)


def _check(logits5: torch.Tensor) -> None:
    if logits5.ndim != 2 or logits5.shape[-1] != len(SCORE_VALUES):
        raise ValueError(f"logits5 must be (B, 5), got {tuple(logits5.shape)}")


def score_values(like: torch.Tensor) -> torch.Tensor:
    """(5,) float tensor ``[1, 2, 3, 4, 5]`` on ``like``'s device."""
    return torch.arange(1, len(SCORE_VALUES) + 1, device=like.device, dtype=torch.float32)


def expected_score(logits5: torch.Tensor) -> torch.Tensor:
    """(B,) float32 expected score ``Σ_k softmax(logits5)_k · k``, in [1, 5]."""
    _check(logits5)
    probs = logits5.float().softmax(-1)  # (B, 5)
    return probs @ score_values(logits5)  # (B,)


def argmax_score(logits5: torch.Tensor) -> torch.Tensor:
    """(B,) long: the most likely score 1..5."""
    _check(logits5)
    return logits5.argmax(-1) + 1


def score_token_loss(
    logits5: torch.Tensor, scores: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean cross-entropy of the score character, plus detached statistics.

    Args:
        logits5: (B, 5) logits of the characters "1".."5" at the score position.
        scores: (B,) integer judge scores in 1..5 (the target class is ``score - 1``).
        label_smoothing: mass spread uniformly over the five classes (``F.cross_entropy``'s).

    Returns:
        ``(loss, stats)``: scalar loss (float32, with gradient) and detached scalars
        ``accuracy`` (argmax == score), ``mae`` (|expected score − score|), ``expected``
        (mean expected score) and ``target`` (mean judge score).

    Raises:
        ValueError: a score outside 1..5 or mismatched shapes (the data side must skip
            such samples; a silent clamp would train on a wrong target).
    """
    _check(logits5)
    scores = torch.as_tensor(scores, device=logits5.device).long().reshape(-1)  # (B,)
    if scores.shape[0] != logits5.shape[0]:
        raise ValueError(f"{scores.shape[0]} scores for {logits5.shape[0]} rows of logits5")
    if scores.numel() and (scores.min() < 1 or scores.max() > 5):
        raise ValueError(f"scores must be in 1..5, got {sorted(set(scores.tolist()))}")
    logits = logits5.float()  # (B, 5)
    loss = F.cross_entropy(logits, scores - 1, label_smoothing=label_smoothing)  # ()
    with torch.no_grad():
        expected = expected_score(logits)  # (B,)
        stats = {
            "accuracy": (argmax_score(logits) == scores).float().mean(),
            "mae": (expected - scores.float()).abs().mean(),
            "expected": expected.mean(),
            "target": scores.float().mean(),
        }
    return loss, stats
