"""GRPO building blocks: reward scorers and the rollout buffer (the module is modules/grpo.py)."""
