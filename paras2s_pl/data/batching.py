"""Per-device batch sizes from a global batch (``data.init_args.global_batch_size``).

The paper states global batches (SFT 64, GRPO B = 32 prompts per rollout); how many devices
and accumulation steps a cluster gives varies. A DataModule with ``global_batch_size`` set
derives its per-device ``batch_size`` at setup from the trainer's ranks (and, where
micro-batches are separate batches of data, accumulation steps); a split that does not come
out whole stops the run at start-up with one line naming the fix (:class:`UsageError`,
exit 2), instead of training on another batch than the config says.
"""

from __future__ import annotations

from typing import Any

from paras2s_pl.errors import UsageError


def per_device_batch(
    global_batch_size: int | None,
    batch_size: int,
    trainer: Any | None,
    accumulate: bool = True,
    unit: str = "samples",
) -> int:
    """``batch_size``, or ``global_batch_size`` / (ranks x accumulation steps) when given.

    ``accumulate``: whether the trainer's accumulation steps read separate batches (SFT,
    reward); GRPO's micro-batches split one rollout, so its global batch divides by ranks.
    """
    if batch_size < 1:  # here, not in __init__: jsonargparse would bury it
        raise UsageError(f"data.init_args.batch_size={batch_size}; give at least 1")
    if global_batch_size is None:
        return batch_size
    world = int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1
    steps = int(getattr(trainer, "accumulate_grad_batches", 1) or 1) if accumulate else 1
    parts = world * steps
    if global_batch_size < 1 or global_batch_size % parts:
        how = f"{world} device(s)" + (f" x {steps} accumulation steps" if accumulate else "")
        raise UsageError(
            f"data.init_args.global_batch_size={global_batch_size} {unit} does not split over "
            f"{how}; give a multiple of {parts}, or change trainer.devices / "
            "trainer.num_nodes" + (" / trainer.accumulate_grad_batches" if accumulate else "")
        )
    return global_batch_size // parts
