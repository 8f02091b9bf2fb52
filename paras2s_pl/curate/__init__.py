"""Data curation (paper §3.1, §4.2, §5.4): preference data from the judge and budget splits.

- :mod:`paras2s_pl.curate.preferences`: ``paras2s curate preferences`` — K policy responses
  per labelled query, perceived (ASR, style captioner) and judged, written as resumable
  ``preference`` shards for the reward model.
- :mod:`paras2s_pl.curate.budget`: ``paras2s curate subset`` and the ``--num_queries`` /
  ``--hours`` / ``--exclude`` / ``--offset`` budget options that split one annotated pool
  between SFT and reward-model data (Fig. 2b).
"""
