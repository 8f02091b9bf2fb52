"""The ``paras2s`` command.

Lightning subcommands (``fit``, ``validate``, ``test``, ``predict``) come from
LightningCLI in subclass mode: the YAML picks the LightningModule and DataModule by
``class_path``; configs are read in omegaconf mode so they can interpolate::

    paras2s fit --config configs/mini/sft.yaml

Project subcommands sit beside them in :data:`COMMANDS` (group → name → function); their
options come from the functions' signatures and docstrings::

    paras2s shards build-demo --out shards/demo

``paras2s --help`` lists everything; every subcommand has ``--help``.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from paras2s_pl import __version__
from paras2s_pl.bench.backends import BenchError
from paras2s_pl.data.schema import SchemaError
from paras2s_pl.data.seed import SeedError

#: Errors caused by the user's input; their messages name the file, the field and the fix.
USER_ERRORS: tuple[type[Exception], ...] = (
    BenchError,
    FileExistsError,
    FileNotFoundError,
    SeedError,
    SchemaError,
)

LIGHTNING_COMMANDS = {
    "fit": "train a model (SFT, reward model, GRPO) from a --config YAML",
    "validate": "run the validation loop of a --config YAML",
    "test": "run the test loop of a --config YAML",
    "predict": "run prediction with a --config YAML",
}


def shards_build_demo(
    out: Path = Path("shards/demo"),
    seed: int = 0,
    sample_rate: int = 16000,
    contents_per_category: int | None = None,
    test_fraction: float = 0.25,
    workers: int = 2,
    overwrite: bool = False,
    seed_files: list[str] | None = None,
    shard_size: int = 100,
) -> None:
    """Synthesise the mini-world shards (train/test demos and unlabeled RL prompts).

    Args:
        out: Output directory; refuses to replace existing shards unless --overwrite.
        seed: Seed of topic split, speaker choice and order; the same seed gives the same sets.
        sample_rate: Rate the audio is stored at (Hz).
        contents_per_category: Use at most this many seed contents per category (default: all).
        test_fraction: Fraction of each category's topics held out for test.
        workers: Synthesis processes.
        overwrite: Replace existing shards in --out.
        seed_files: Seed JSONL files to use instead of the shipped ones.
        shard_size: Samples per shard (more shards spread better over workers and ranks).
    """
    from paras2s_pl.data.demo import build_demo

    manifests = build_demo(
        out=out,
        seed=seed,
        sample_rate=sample_rate,
        contents_per_category=contents_per_category,
        test_fraction=test_fraction,
        workers=workers,
        overwrite=overwrite,
        seed_files=seed_files,
        shard_size=shard_size,
    )
    for split, m in manifests.items():
        print(
            f"{out}/{split}: {m['count']} samples, {m['hours'] * 60:.1f} min, "
            f"{len(m['shards'])} shard(s), skipped {sum(m['skipped'].values())}"
        )


def shards_inspect(path: Path, split: str = "train", limit: int = 0) -> None:
    """Read a shard split end to end and print its manifest summary and read statistics.

    Args:
        path: Directory holding ``<split>.manifest.json``.
        split: Split to read.
        limit: Print the metadata of this many samples.
    """
    import json

    from paras2s_pl.data.shards import ShardDataset, read_manifest

    manifest = read_manifest(path, split)
    ds = ShardDataset(path, split=split)
    for n, sample in enumerate(ds):
        if n < limit:
            print(sample.key, json.dumps(sample.meta.__dict__, ensure_ascii=False))
    summary = {k: manifest[k] for k in ("schema", "count", "hours", "label_balance", "speakers")}
    print(json.dumps(summary, indent=2))
    print("read:", json.dumps(ds.stats.as_dict()))


def bench_respond(
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
        asr: The baseline's recogniser: ``pocketsphinx`` (embedded) or ``whisper``.
        asr_options: Options of the recogniser, e.g. ``{"model": "/ckpt/whisper"}``.
        overwrite: Replace responses already in --out.
        policy: An exported policy directory (``runs/mini/sft_policy``): its greedy answers.
        sampling: Sampling overrides of the policy (e.g. ``{"max_new_tokens": 200}``).
    """
    from paras2s_pl.bench import backends
    from paras2s_pl.bench.systems import build_responses

    if policy is not None or system == "policy":
        from paras2s_pl.bench.policy_responses import build_policy_responses

        if policy is None:
            raise ValueError("--system policy needs --policy DIR (an exported policy)")
        target = out or Path("runs/responses") / system
        manifest = build_policy_responses(
            policy, testset, split, target, system, sampling, overwrite=overwrite
        )
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


def bench_run(
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


def bench_table(runs: Path = Path("runs/bench"), systems: list[str] | None = None) -> None:
    """Render the bench tables of every system in a runs directory (table.md, table.json).

    Args:
        runs: Runs directory holding ``<system>/scores.jsonl``.
        systems: Only these systems (default: all).
    """
    from paras2s_pl.bench.tables import write_tables

    print(write_tables(runs, systems)[0])


def bench_correlate(auto: str, human: str, out: Path | None = None) -> None:
    """Pearson r of judge vs human scores per category, and system rankings side by side.

    Args:
        auto: Comma-separated ``scores.jsonl`` files or runs directories.
        human: Comma-separated human CSVs (columns key, system, annotator, score).
        out: Also write ``<out>.md`` and ``<out>.json``.
    """
    from paras2s_pl.bench.correlate import correlate, read_auto, read_human, write_result

    scores, counts = read_human(human)
    print(write_result(correlate(read_auto(auto), scores), out))
    print(f"human rows read: {counts['rows']}, not yet rated: {counts['unrated']}")


def bench_export_human(
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

    print(export_human_template(runs, out, per_category, seed, systems))


def _exclude_list(exclude: str | None) -> list[str] | None:
    """A file path stays a path; otherwise comma-separated keys/pair ids."""
    if exclude is None or Path(exclude).is_file():
        return None if exclude is None else [exclude]
    return [x.strip() for x in exclude.split(",") if x.strip()]


def curate_preferences(
    policy: Path,
    queries: Path = Path("shards/demo"),
    split: str = "train",
    out: Path = Path("shards/prefs"),
    k: int = 32,
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
    query_transcript: bool = False,
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
        policy: The exported policy directory (SFT's ``<log_dir>/policy``).
        queries: Shard directory of labelled queries (the annotated pool).
        split: Its split; also the output split.
        out: Output directory (resumable: a rerun skips finished queries).
        k: Responses sampled per query (the paper: 32).
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
        query_transcript: The policy was trained with the query transcript on its text stream.
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
        query_transcript=query_transcript,
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
        exclude=_exclude_list(exclude),
        offset=offset,
        seed=seed,
        part_queries=part_queries,
        cache=not no_cache,
        overwrite=overwrite,
    )
    print(f"{out}/{split}: {m['count']} pairs from {m['queries']['done']}/"
          f"{m['queries']['selected']} queries; scores {m['score_histogram']}; "
          f"skipped {m['skipped'] or 'none'}; {m['seconds_per_query']} s/query")  # fmt: skip


def curate_subset(
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
    from paras2s_pl.curate.budget import subset

    rec = subset(pool, out, split, num_queries, hours, seed, _exclude_list(exclude), offset,
                 overwrite)  # fmt: skip
    print(f"{out}/{split}: {rec['queries']} queries, {rec['hours'] * 60:.1f} min; selection in "
          f"{out}/{split}.selection.json")  # fmt: skip


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
        profile: ``full`` (the README's main job) or ``tiny`` (seconds-scale, for CI).
        force: Rerun every stage, even finished ones.
        jobs: 2 runs the untrained policy and the reference systems beside the training
            chain (their logs in out/logs); 1 runs every stage in order.
    """
    from paras2s_pl.pipeline import run_demo

    run_demo(out, shards, profile, force, jobs=jobs)


#: Project subcommands: group → name → function.
COMMANDS: dict[str, dict[str, Callable[..., object]]] = {
    "shards": {"build-demo": shards_build_demo, "inspect": shards_inspect},
    "bench": {
        "respond": bench_respond,
        "run": bench_run,
        "table": bench_table,
        "correlate": bench_correlate,
        "export-human": bench_export_human,
    },
    "curate": {"preferences": curate_preferences, "subset": curate_subset},
}
#: Project commands without a group.
SINGLE_COMMANDS: dict[str, Callable[..., object]] = {"demo": demo}


def _help() -> str:
    lines = [
        f"paras2s {__version__}: ParaS2S benchmark and alignment (Lightning + HF)",
        "",
        "usage: paras2s <command> [options]   (each command has --help)",
        "",
        "Lightning commands (configs pick the module and data by class_path):",
    ]
    lines += [f"  {name:<22}{text}" for name, text in LIGHTNING_COMMANDS.items()]
    lines += ["", "Project commands:"]
    for group, commands in COMMANDS.items():
        for name, fn in commands.items():
            first = (fn.__doc__ or "").strip().splitlines()[0]
            lines.append(f"  {group + ' ' + name:<22}{first}")
    from paras2s_pl.sweep import sweep_command

    for name, fn in {**SINGLE_COMMANDS, "sweep": sweep_command}.items():
        first = (fn.__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<22}{first}")
    return "\n".join(lines)


def lightning_cli(args: list[str] | None = None, run: bool = True):
    """Build the LightningCLI (subclass mode, omegaconf parser) on ``args``."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    return LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def _bare_flags(fn: Callable[..., object], args: list[str]) -> list[str]:
    """Let boolean options be given bare (``--overwrite``), as users expect of a CLI."""
    flags = {
        f"--{name}"
        for name, p in inspect.signature(fn).parameters.items()
        if p.annotation in (bool, "bool")
    }
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        nxt = args[i + 1] if i + 1 < len(args) else "--"
        if arg in flags and nxt.startswith("--"):
            out.append("true")
    return out


def main(argv: list[str] | None = None) -> object:
    """Entry point of the ``paras2s`` console script."""
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(_help())
        return None
    if argv[0] == "--version":
        print(__version__)
        return None
    if argv[0] in COMMANDS:
        from jsonargparse import auto_cli

        group = COMMANDS[argv[0]]
        args = argv[1:]
        if args and args[0] in group:
            args = [args[0], *_bare_flags(group[args[0]], args[1:])]
        try:
            return auto_cli(group, args=args, prog=f"paras2s {argv[0]}", as_positional=False)
        except USER_ERRORS as err:  # a clear one-line error, not a traceback
            print(f"paras2s {' '.join(argv[:2])}: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
    if argv[0] == "sweep":  # its own parser: auto_cli would swallow its --config option
        from paras2s_pl.sweep import sweep_cli

        return sweep_cli(argv[1:])
    if argv[0] in SINGLE_COMMANDS:
        from jsonargparse import auto_cli

        from paras2s_pl.pipeline import StageError

        fn = SINGLE_COMMANDS[argv[0]]
        try:
            return auto_cli(fn, args=_bare_flags(fn, argv[1:]), prog=f"paras2s {argv[0]}")
        except USER_ERRORS as err:
            print(f"paras2s {argv[0]}: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except StageError as err:
            print(f"paras2s {argv[0]}: {err}", file=sys.stderr)
            raise SystemExit(1) from None
    if argv[0] in LIGHTNING_COMMANDS:
        from paras2s_pl.errors import MissingInputError

        try:
            return lightning_cli(None if from_sys else argv)
        except MissingInputError as err:  # an earlier stage's output: name it, no traceback
            print(f"paras2s {argv[0]}: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
    print(f"paras2s: unknown command {argv[0]!r}\n\n{_help()}", file=sys.stderr)
    raise SystemExit(2)


def entry() -> None:
    """Console-script entry: run :func:`main` and exit 0 on success.

    ``main`` returns the LightningCLI object (tests read its trainer); a console script
    that returned it would hand it to ``sys.exit`` and end with status 1.
    """
    main()


if __name__ == "__main__":
    entry()
