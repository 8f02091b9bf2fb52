"""ParaS2SBench: the scoring guideline, the judges that apply it, and their bookkeeping.

* ``guideline.md`` — the paper's scoring guideline (§A.11.5) as a template data file.
* :mod:`paras2s_pl.bench.prompt` — :class:`JudgeItem` and :func:`build_prompt`, the one
  place that fills the guideline.
* :mod:`paras2s_pl.bench.parse` — :func:`parse_score` for "The reason is _; The score is _".
* :mod:`paras2s_pl.bench.judges` — the ``Judge`` protocol, the OpenAI-compatible judge,
  the Batch API judge and the on-disk cache; :mod:`~paras2s_pl.bench.rubric` — the
  offline rubric judge (a stand-in, always labelled as one).
* :mod:`paras2s_pl.bench.responses` — where a system's responses come from (a directory
  of ``<key>.flac`` or a shard set); :mod:`~paras2s_pl.bench.systems` — the reference
  systems (pipeline baseline, topline) and their responders.
* :mod:`paras2s_pl.bench.evaluate` — response → ASR ``C`` + captioner ``S`` → judge →
  ``scores.jsonl``; :mod:`~paras2s_pl.bench.tables` — Table 3, per-style and pair tables;
  :mod:`~paras2s_pl.bench.correlate` — judge–human Pearson r and rankings (Tables 1–2).
* :mod:`paras2s_pl.bench.backends` — the name → class registries behind ``paras2s bench``.

``README.md`` here walks through ``paras2s bench``. Tests: ``pytest tests/test_judges.py
tests/test_bench.py``.
"""
