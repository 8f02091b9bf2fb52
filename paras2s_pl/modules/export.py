"""``metrics.json`` beside a stage's export: what the run ended with, for pipelines and sweeps."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

METRICS_FILE = "metrics.json"


def write_fit_metrics(
    trainer: Any, directory: str | Path, extra: dict[str, Any] | None = None
) -> Path | None:
    """Write ``<directory>/metrics.json``: the last logged metrics and the best checkpoint's.

    ``{"global_step": …, "metrics": {name: value}, "best": {monitor: score} | {}}``; only
    finite scalars are kept. ``extra``: more top-level fields (JSON-serialisable; e.g. the
    reward model's ``exported`` and ``heldout``). Returns the path (None without a trainer).
    """
    if trainer is None:
        return None
    last = {}
    for name, value in trainer.callback_metrics.items():
        value = float(value.item() if torch.is_tensor(value) else value)
        if math.isfinite(value):
            last[name] = value
    best = {}
    ckpt = getattr(trainer, "checkpoint_callback", None)
    score = getattr(ckpt, "best_model_score", None)
    if ckpt is not None and ckpt.monitor and score is not None and torch.isfinite(score):
        best[ckpt.monitor] = float(score)
    path = Path(directory) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"global_step": int(trainer.global_step), "metrics": last, "best": best}
    record.update(extra or {})
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def read_fit_metrics(directory: str | Path) -> dict[str, Any]:
    """Inverse of :func:`write_fit_metrics` (empty dict when the file is missing)."""
    path = Path(directory) / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else {}
