"""Models: plain ``nn.Module`` / Hugging Face classes and their loading. Never imports Lightning.

- :mod:`paras2s_pl.models.tokenizer`: the mini world's text tokenizer (one id per mini-world
  word, or a small byte-level BPE; built and cached on disk); real models use their
  checkpoint's own tokenizer.
- :mod:`paras2s_pl.models.dual_stream`: the speech-to-speech policy, a Kimi-Audio-architecture
  dual-stream decoder (:class:`DualStreamConfig`, :class:`DualStreamLM`);
  :mod:`paras2s_pl.models.kimi_checkpoint`: Kimi-Audio checkpoints into it
  (:func:`load_kimi_checkpoint`) and the :func:`build_policy` factory.
- :mod:`paras2s_pl.models.layout`: the dual-stream id layout of one dialogue turn
  (:func:`build_example`, :func:`build_prompt`, :func:`collate`).
- :mod:`paras2s_pl.models.sampling`: batched, KV-cached generation (:func:`generate`) and the
  log-prob recomputation GRPO needs (:func:`sequence_logprobs`).
- :mod:`paras2s_pl.models.reward`: the reward model φ, score "1".."5" as one token
  (:class:`RewardModel`, the ``tokens`` backend, :func:`load_reward_model`);
  :mod:`paras2s_pl.models.reward_omni`: the Qwen2.5-Omni thinker + LoRA backend.
"""
