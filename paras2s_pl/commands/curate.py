"""``paras2s curate …``: judged preference data from a policy, budgeted subsets of a pool.

E.g. ``paras2s curate preferences --policy runs/mini/sft_policy --queries shards/demo --k 8``
(the reward model's data; README "Training").
"""

from __future__ import annotations

from pathlib import Path


def exclude_list(exclude: str | None) -> list[str] | None:
    """A file path stays a path; otherwise comma-separated keys/pair ids."""
    if exclude is None or Path(exclude).is_file():
        return None if exclude is None else [exclude]
    return [x.strip() for x in exclude.split(",") if x.strip()]


def preferences(
    policy: Path,
    queries: Path = Path("shards/demo"),
    split: str = "train",
    out: Path = Path("shards/prefs"),
    k: int = 8,
    judge: str = "rubric",
    judge_model: str | None = None,
    judge_base_url: str | None = None,
    judge_options: dict | None = None,
    asr: str = "pocketsphinx",
    asr_options: dict | None = None,
    captioner: str = "prosody",
    captioner_options: dict | None = None,
    transcript: str = "asr",
    temperature: float = 1.0,
    text_temperature: float = 1.0,
    max_new_tokens: int = 256,
    sampling: dict | None = None,
    tokenizer: str | None = None,
    policy_query_transcript: bool | None = None,
    num_queries: int | None = None,
    hours: float | None = None,
    exclude: str | None = None,
    offset: int = 0,
    seed: int = 0,
    part_queries: int = 16,
    device: str = "cpu",
    dtype: str | None = None,
    threads: int = 1,
    no_cache: bool = False,
    overwrite: bool = False,
) -> None:
    """Sample K policy responses per labelled query, judge them, write preference shards.

    Args:
        policy: The exported policy directory (the SFT config's ``export_dir``:
            ``runs/mini/sft_policy`` in the mini world).
        queries: Shard directory of labelled queries (the annotated pool).
        split: Its split; also the output split.
        out: Output directory (resumable: a rerun skips finished queries).
        k: Responses sampled per query: 8 suits the mini world, like the other
            defaults (README, ``paras2s demo``); the paper samples 32 (``--k 32``).
        judge: ``rubric`` (offline stand-in), ``openai`` or ``openai_batch``.
        judge_model: The judge's model id (OpenAI judges; default gpt-4.1).
        judge_base_url: OpenAI-compatible endpoint of the judge.
        judge_options: More judge options, e.g. ``{"max_concurrency": 8}``.
        asr: Response recogniser C: ``pocketsphinx`` (embedded) or ``whisper``.
        asr_options: Options of the recogniser.
        captioner: Style captioner S: ``prosody`` (embedded), ``audio_llm`` or ``openai``.
        captioner_options: Options of the captioner.
        transcript: ``asr`` (C on the response audio) or ``policy`` (its own text stream).
        temperature: Audio-stream sampling temperature (high for diverse responses).
        text_temperature: Text-stream sampling temperature.
        max_new_tokens: Most response positions.
        sampling: More SamplingConfig fields, e.g. ``{"text_top_p": 0.95}``.
        tokenizer: Tokenizer directory when the policy directory has none.
        policy_query_transcript: Whether the policy hears the query transcript (the query's
            ``content``); default: as its export records. Overriding it warns.
        num_queries: Budget: at most this many queries (whole contrasting pairs).
        hours: Budget: at most this many hours of query audio.
        exclude: Queries to leave out: a ``*.selection.json`` / text file, or comma-separated
            keys and pair ids (e.g. what the SFT subset took).
        offset: Skip this many pairs of the seeded order first.
        seed: Seed of the budget order and of each query's sampling.
        part_queries: Queries per written part (the unit of resumption).
        device: Where the policy runs (``cpu``, ``cuda``).
        dtype: Policy weight dtype, e.g. ``bfloat16`` (default: as saved, float32).
        threads: Torch CPU threads (1 is fastest for the tiny policy, above all on a busy
            machine; 0 = torch's default).
        no_cache: Do not cache judge calls in ``<out>/cache``.
        overwrite: Start again: remove this split's parts, progress and selection.
    """
    import torch

    from paras2s_pl.bench import backends
    from paras2s_pl.curate.preferences import Perceivers, curate_preferences, load_policy
    from paras2s_pl.errors import UsageError

    # checked before the policy loads: a typo must not cost a minute of start-up
    if k < 1 or part_queries < 1:
        raise UsageError(f"--k {k} and --part_queries {part_queries}: each must be >= 1")
    if num_queries is not None and num_queries < 1:
        raise UsageError(f"--num_queries {num_queries}: give at least 1 (or leave it out: all)")
    if hours is not None and hours <= 0:
        raise UsageError(f"--hours {hours}: give a positive budget (or leave it out: all)")
    if transcript not in ("asr", "policy"):
        raise UsageError(f"--transcript {transcript!r}; expected 'asr' or 'policy'")
    if threads:
        torch.set_num_threads(threads)
    pol = load_policy(
        policy,
        tokenizer=tokenizer,
        sampling={
            "audio_temperature": temperature,
            "text_temperature": text_temperature,
            "max_new_tokens": max_new_tokens,
            **(sampling or {}),
        },
        device=device,
        query_transcript=policy_query_transcript,
        dtype=dtype,
    )
    perceivers = Perceivers(
        asr=backends.build("asr", asr, asr_options) if transcript == "asr" else None,
        captioner=backends.build("captioner", captioner, captioner_options),
        judge=backends.build(
            "judge", judge, judge_options, model=judge_model, base_url=judge_base_url
        ),
        transcript=transcript,
    )
    m = curate_preferences(
        pol,
        queries,
        out,
        perceivers,
        split=split,
        k=k,
        num_queries=num_queries,
        hours=hours,
        exclude=exclude_list(exclude),
        offset=offset,
        seed=seed,
        part_queries=part_queries,
        cache=not no_cache,
        overwrite=overwrite,
    )
    print(f"{out}/{split}: {m['count']} pairs from {m['queries']['done']}/"
          f"{m['queries']['selected']} queries; scores {m['score_histogram']}; "
          f"skipped {m['skipped'] or 'none'}; {m['seconds_per_query']} s/query")  # fmt: skip


def subset(
    pool: Path,
    out: Path,
    split: str = "train",
    num_queries: int | None = None,
    hours: float | None = None,
    seed: int = 0,
    exclude: str | None = None,
    offset: int = 0,
    overwrite: bool = False,
) -> None:
    """Copy a budgeted selection of an annotated pool to a new shard set (e.g. SFT's share).

    Args:
        pool: Shard directory of the annotated pool.
        out: Output shard directory (also gets ``<split>.selection.json``).
        split: The split to take from (and write).
        num_queries: At most this many queries (whole contrasting pairs).
        hours: At most this many hours of query audio.
        seed: Seed of the pair order (use the same one for every cut of one pool).
        exclude: A ``*.selection.json`` / text file, or comma-separated keys and pair ids.
        offset: Skip this many pairs of the seeded order first.
        overwrite: Replace existing shards of this split in --out.
    """
    from paras2s_pl.curate.budget import subset as take_subset

    rec = take_subset(pool, out, split, num_queries, hours, seed, exclude_list(exclude), offset,
                 overwrite)  # fmt: skip
    print(f"{out}/{split}: {rec['queries']} queries, {rec['hours'] * 60:.1f} min; selection in "
          f"{out}/{split}.selection.json")  # fmt: skip
