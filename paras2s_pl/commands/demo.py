"""``paras2s demo``: the mini world end to end (``paras2s demo --profile tiny`` for CI).

The stages and their sizes are in ``paras2s_pl/pipeline.py``.
"""

from __future__ import annotations

from pathlib import Path


def demo(
    out: Path = Path("runs/demo"),
    shards: Path = Path("shards/demo"),
    profile: str = "full",
    force: bool = False,
    jobs: int = 2,
) -> None:
    """The mini world end to end: shards → SFT → preferences → reward → GRPO → bench table.

    Each stage is a normal ``paras2s`` call (printed as it runs); finished stages are
    skipped on rerun. See ``paras2s_pl/pipeline.py`` for the stages and sizes.

    Args:
        out: Where every stage writes (policies, reward model, bench, TensorBoard in out/tb).
        shards: The demo shards (built there if missing).
        profile: ``full`` (the README's main job), ``long`` (the whole 144-query test split,
            60 GRPO steps: about an hour) or ``tiny`` (seconds-scale, for CI).
        force: Rerun every stage, even finished ones.
        jobs: 2 runs the untrained policy and the reference systems beside the training
            chain (their logs in out/logs); 1 runs every stage in order.
    """
    from paras2s_pl.pipeline import run_demo

    run_demo(out, shards, profile, force, jobs=jobs)
