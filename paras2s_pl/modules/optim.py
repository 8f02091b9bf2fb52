"""The optimiser every stage uses: AdamW, linear warm-up, then cosine decay or a constant lr.

The schedule is stepped per optimizer step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup


def adamw_cosine(
    params: Iterable[torch.nn.Parameter],
    trainer: Any,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    warmup_steps: int,
    max_steps: int | None,
    what: str = "the model",
    schedule: str = "cosine",
) -> dict[str, Any]:
    """``configure_optimizers``' return value over the trainable ``params``.

    ``max_steps`` is the schedule's length; None = ``trainer.estimated_stepping_batches``.
    ``schedule``: ``cosine`` (decay to 0 at ``max_steps``) or ``constant`` (after warm-up).
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule={schedule!r}; expected 'cosine' or 'constant'")
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError(f"{what} has no trainable parameters")
    total = max_steps
    if total is None:
        if trainer is None:
            raise ValueError("set model.max_steps (no trainer to estimate the schedule from)")
        total = trainer.estimated_stepping_batches
        if total == float("inf"):
            raise ValueError("set trainer.max_steps, trainer.max_epochs or model.max_steps")
    optimizer = torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if schedule == "constant":
        scheduler = get_constant_schedule_with_warmup(optimizer, warmup_steps)
    else:
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps, int(total))
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
    }
