"""The LightningModules ("systems"): training logic, logging and optimisers per stage.

They use :mod:`paras2s_pl.models`, :mod:`paras2s_pl.data` and :mod:`paras2s_pl.audio` and
delegate the maths to :mod:`paras2s_pl.losses`.

- :mod:`paras2s_pl.modules.sft`: :class:`~paras2s_pl.modules.sft.SFTModule`, supervised
  fine-tuning of the dual-stream policy (``paras2s fit --config configs/mini/sft.yaml``).
- :mod:`paras2s_pl.modules.reward`: :class:`~paras2s_pl.modules.reward.RewardModule`, the
  reward model's score-token training (``paras2s fit --config configs/mini/reward.yaml``).
"""
