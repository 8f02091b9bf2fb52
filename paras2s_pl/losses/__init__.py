"""Pure tensor maths of the training stages: ``(tensors) -> (loss, stats)``, no Lightning.

- :mod:`paras2s_pl.losses.sft`: next-token cross-entropy on both dual-stream heads.
- :mod:`paras2s_pl.losses.reward`: score-token cross-entropy and the expected score.
- :mod:`paras2s_pl.losses.grpo`: group advantages and the clipped GRPO objective with k3 KL.
"""
