"""``paras2s bench …``: ParaS2SBench responses, scores, tables and human scores.

The walk-through is ``paras2s_pl/bench/README.md``, e.g.
``paras2s bench run --testset shards/demo --responses runs/responses/baseline``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal


def respond(
    system: str,
    testset: Path,
    split: str = "test",
    out: Path | None = None,
    responder: str | None = None,
    responder_options: dict | None = None,
    asr: str = "pocketsphinx",
    asr_options: dict | None = None,
    overwrite: bool = False,
    policy: Path | None = None,
    sampling: dict | None = None,
    query_transcript: Literal["asr", "shard"] = "asr",
    policy_query_transcript: bool | None = None,
) -> None:
    """Write a system's responses for every test query: a reference system or a trained policy.

    Args:
        system: ``baseline`` (ASR → reply from text alone → neutral voice), ``topline``
            (reply from the true content and style, spoken in its tone), or ``policy`` (a
            trained speech policy, ``--policy DIR``; any other name with ``--policy`` too,
            e.g. ``sft`` or ``grpo``, names the table row).
        testset: Shard directory of the labelled queries.
        split: Its split.
        out: Output directory of ``<key>.flac`` + ``responses.jsonl`` (default
            ``runs/responses/<system>``).
        responder: Who writes replies: ``seed`` (offline) or ``openai``; default: seed for
            the baseline, the test set's reference replies for the topline.
        responder_options: Options of the responder, e.g. ``{"model": "gpt-4.1",
            "base_url": "http://localhost:8000/v1"}``.
        asr: The recogniser of the baseline, and of the query transcript a policy trained
            with one hears: ``pocketsphinx`` (embedded) or ``whisper``.
        asr_options: Options of the recogniser, e.g. ``{"model": "/ckpt/whisper"}``.
        overwrite: Replace responses already in --out.
        policy: An exported policy directory (``runs/mini/sft_policy``): its greedy answers.
        sampling: Sampling overrides of the policy (e.g. ``{"max_new_tokens": 200}``).
        query_transcript: Where the query transcript of a policy that hears one comes from:
            ``asr`` (--asr on the query audio: the system gets speech only) or ``shard``
            (the test set's ``content``).
        policy_query_transcript: Whether the policy hears the query transcript; default: as
            its export records (``query_transcript`` in ``paras2s_policy.json``). Overriding
            it warns.
    """
    from paras2s_pl.bench import backends
    from paras2s_pl.bench.systems import build_responses
    from paras2s_pl.errors import UsageError

    if policy is not None or system == "policy":
        from paras2s_pl.bench.policy_responses import build_policy_responses

        if policy is None:
            raise UsageError("--system policy needs --policy DIR (an exported policy)")
        target = out or Path("runs/responses") / system
        manifest = build_policy_responses(
            policy, testset, split, target, system, sampling, overwrite=overwrite,
            query_transcript=query_transcript,
            asr=backends.build("asr", asr, asr_options) if query_transcript == "asr" else None,
            policy_query_transcript=policy_query_transcript,
        )  # fmt: skip
        print(f"{system}: {manifest['written']} responses, {manifest['failed']} without audio "
              f"({manifest['seconds']} s) in {target}")  # fmt: skip
        return

    manifest = build_responses(
        system,
        testset,
        split,
        out or Path("runs/responses") / system,
        responder=backends.build("responder", responder, responder_options) if responder else None,
        asr=backends.build("asr", asr, asr_options) if system == "baseline" else None,
        overwrite=overwrite,
    )
    print(f"{system}: {manifest['written']} responses, {manifest['failed']} failed "
          f"({manifest['seconds']} s) in {out or Path('runs/responses') / system}")  # fmt: skip


def run(
    testset: Path,
    responses: Path,
    split: str = "test",
    system: str | None = None,
    responses_split: str | None = None,
    judge: str = "rubric",
    judge_model: str | None = None,
    judge_base_url: str | None = None,
    judge_options: dict | None = None,
    asr: str = "pocketsphinx",
    asr_options: dict | None = None,
    captioner: str = "prosody",
    captioner_options: dict | None = None,
    out: Path = Path("runs/bench"),
    no_cache: bool = False,
    recompute: bool = False,
) -> None:
    """Score a system's responses (ASR + style caption + judge) and print the bench table.

    Args:
        testset: Shard directory of the labelled queries.
        responses: The system's responses: a directory of ``<key>.flac`` files or a shard
            set keyed by query key.
        split: The test split.
        system: Name of the system (table row, output sub-directory); default: the name of
            --responses.
        responses_split: Split of a response shard set (default: --split).
        judge: ``rubric`` (offline stand-in), ``openai`` or ``openai_batch``.
        judge_model: The judge's model id (OpenAI judges; default gpt-4.1).
        judge_base_url: OpenAI-compatible endpoint of the judge (vLLM, llama.cpp…).
        judge_options: More judge options, e.g. ``{"max_concurrency": 4}``.
        asr: Response recogniser C: ``pocketsphinx`` (embedded) or ``whisper``.
        asr_options: Options of the recogniser.
        captioner: Style captioner S: ``prosody`` (embedded), ``audio_llm`` or ``openai``.
        captioner_options: Options of the captioner.
        out: Runs directory: ``<system>/scores.jsonl``, ``summary.json``, ``table.md``.
        no_cache: Do not cache judge calls in ``<out>/cache``.
        recompute: Transcribe and caption again instead of reusing ``perception.jsonl``.
    """
    from paras2s_pl.bench import backends
    from paras2s_pl.bench.evaluate import evaluate
    from paras2s_pl.bench.responses import open_responses
    from paras2s_pl.bench.tables import write_tables

    summary = evaluate(
        testset,
        split,
        open_responses(responses, responses_split or split),
        system or responses.resolve().name,
        asr=backends.build("asr", asr, asr_options),
        captioner=backends.build("captioner", captioner, captioner_options),
        judge=backends.build(
            "judge", judge, judge_options, model=judge_model, base_url=judge_base_url
        ),
        out_dir=out,
        cache=not no_cache,
        recompute=recompute,
    )
    print(write_tables(out)[0])
    if summary["judge"]["usage"] is not None:
        print(f"judge usage this run: {summary['judge']['usage']}")
    counts = summary["all"]
    if counts["n"] and not counts["scored"]:  # a table of nothing must not look like success
        from paras2s_pl.errors import RunFailedError

        raise RunFailedError(
            f"error: no query of {counts['n']} was scored ({counts['missing']} without a "
            f"response, {counts['parse_failed']} parse failures, {counts['error']} judge "
            f"errors); see {out}/{system or responses.resolve().name}/scores.jsonl"
        )


def table(
    runs: Path = Path("runs/bench"),
    systems: list[str] | None = None,
    compare: str | None = None,
    against: str | None = None,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> None:
    """Render the bench tables of every system in a runs directory (table.md, table.json).

    Args:
        runs: Runs directory holding ``<system>/scores.jsonl``.
        systems: Only these systems (default: all).
        compare: Paired comparisons ``A:B[,C:D…]``: Overall(A) − Overall(B) on the queries
            scored by both, with a 95 % bootstrap CI by contrasting pair. A and B are systems
            of --runs, or system directories / ``scores.jsonl`` files of any other run.
        against: Compare every system of --runs with this one (e.g. ``sft``).
        n_resamples: Bootstrap resamples of the comparisons.
        seed: Seed of the bootstrap (same seed, same interval).
    """
    from paras2s_pl.bench.tables import write_tables

    print(write_tables(runs, systems, compare, against, n_resamples, seed)[0])


def correlate(auto: str, human: str, out: Path | None = None) -> None:
    """Pearson r of judge vs human scores per category, and system rankings side by side.

    Args:
        auto: Comma-separated ``scores.jsonl`` files or runs directories.
        human: Comma-separated human CSVs (columns key, system, annotator, score).
        out: Also write ``<out>.md`` and ``<out>.json``.
    """
    from paras2s_pl.bench.correlate import correlate as correlate_scores
    from paras2s_pl.bench.correlate import read_auto, read_human, write_result

    scores, counts = read_human(human)
    print(write_result(correlate_scores(read_auto(auto), scores), out))
    print(f"human rows read: {counts['rows']}, not yet rated: {counts['unrated']}")


def export_human(
    runs: Path = Path("runs/bench"),
    out: Path = Path("human_template.csv"),
    per_category: int | None = None,
    seed: int = 0,
    systems: list[str] | None = None,
) -> None:
    """Export an annotation template (CSV + audio files) for human scoring of the responses.

    Args:
        runs: Runs directory holding ``<system>/scores.jsonl`` and ``summary.json``.
        out: The CSV; audio goes to ``<out stem>_audio/`` beside it.
        per_category: Rate at most this many queries per category (same for every system).
        seed: Seed of the query choice and the row order.
        systems: Only these systems (default: all).
    """
    from paras2s_pl.bench.correlate import export_human_template

    m = export_human_template(runs, out, per_category, seed, systems)
    print(f"{m['csv']}: {m['rows']} rows ({m['queries']} queries x {m['systems']} systems), audio "
          f"in {m['audio']}; {m['skipped_no_audio']} responses without audio left out")  # fmt: skip
    print("each annotator fills `annotator` and `score` (1-5) in a copy of the CSV; then "
          f"paras2s bench correlate --auto {runs} --human <their CSVs>")  # fmt: skip
