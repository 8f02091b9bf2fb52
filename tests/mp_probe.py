"""Probes that ``paras2s fit`` subprocesses load by class path in ``tests/test_multiprocess.py``.

They write one JSON line per event to ``$PARAS2S_PROBE_DIR/<what>.rank<R>.jsonl`` (the test
puts ``tests/`` on ``PYTHONPATH``), so the test can see what each rank consumed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback

from paras2s_pl.rl.scorers import TokenFractionScorer


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def record(what: str, row: dict[str, Any]) -> None:
    """Append ``row`` to this rank's file of ``what``."""
    out = Path(os.environ["PARAS2S_PROBE_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{what}.rank{_rank()}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def batch_keys(batch: dict[str, Any]) -> list[str]:
    """Sample keys of an SFT / preference batch, or the prompts of a GRPO step."""
    if "keys" in batch:
        return list(batch["keys"])
    return [p.key for p in batch["prompts"]]


class RecordBatches(Callback):
    """Every training batch's sample keys, with the step and the world size; at the start,
    what the optimizer holds and whether GRPO's frozen reference is sharded."""

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: D102
        from torch.distributed.fsdp import FSDPModule

        in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
        reference = getattr(pl_module, "reference", None)
        record(
            "start",
            {
                "optimizer_tensors": len(in_optimizer),
                "policy_tensors": len(list(pl_module.model.parameters())),
                "reference_in_optimizer": reference is not None
                and any(id(p) in in_optimizer for p in reference.parameters()),
                "reference_sharded": isinstance(reference, FSDPModule),
            },
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: D102
        record(
            "batches",
            {"step": trainer.global_step, "world": trainer.world_size, "keys": batch_keys(batch)},
        )


class RecordingScorer(TokenFractionScorer):
    """The low-code-fraction reward, noting which prompts (one per response) this rank scored."""

    def __call__(self, prompts, transcripts, responses) -> torch.Tensor:  # noqa: D102
        record("scored", {"keys": [p.key for p in prompts]})
        return super().__call__(prompts, transcripts, responses)
