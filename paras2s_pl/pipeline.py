r"""``paras2s demo``: the mini world end to end, one normal ``paras2s`` call per stage.

::

    paras2s demo [--out runs/demo] [--shards shards/demo] [--profile full|long|tiny] [--force]

Stages, in order (each prints and runs its command; a user can rerun any one alone):

=============  ==========================================================================
``shards``     ``paras2s shards build-demo`` (skipped when the shards exist)
``bench_set``  ``paras2s curate subset`` of whole contrasting pairs of the test split
``sft``        ``paras2s fit --config configs/mini/sft.yaml``  → ``<out>/sft_policy``
``base``       the same fit with ``max_steps 0``: the untrained policy (Table 3's base row)
``prefs``      ``paras2s curate preferences`` from the SFT policy, rubric judge
``reward``     ``paras2s fit --config configs/mini/reward.yaml`` → ``<out>/reward_model``
``grpo``       ``paras2s fit --config configs/mini/grpo.yaml``  → ``<out>/grpo_policy``
``respond_*``  ``paras2s bench respond`` for base, sft, grpo, baseline, topline
``bench_*``    ``paras2s bench run`` of each on the bench set
``table``      ``paras2s bench table``: Table 3 of the five systems and paired CIs
=============  ==========================================================================

At the end it prints Table 3, each system's Overall against SFT and SFT's against base
with a paired bootstrap 95 % CI (:data:`COMPARISONS`, :mod:`paras2s_pl.bench.compare`), the
reward model's held-out Pearson r with the judge, the GRPO reward at its first and last
step, and where the TensorBoard logs are (``tensorboard --logdir <out>/tb``). A finished
stage leaves ``<out>/.stages/<name>.json`` (its command, seconds, time) and is skipped on
rerun unless ``--force``; a failed stage stops the run with its command, so fixing and
rerunning continues from there. Each stage runs in
its own process (``python -m paras2s_pl.cli …``), exactly as typed by hand; its whole output
goes to ``<out>/logs/<stage>.log``. With ``--jobs 2`` (default) the stages that need no
trained model (the untrained policy and the two reference systems: export, respond, bench;
:data:`SIDE_LANE`) run beside the training chain on the second core. On the console every
stage opens with its command and closes with ``done in N s``; the training chain's output
follows, each line prefixed with its stage (``sft      | step 30/300 …``), while the side
stages print only those two lines.

Profiles: ``full`` (the README's main job; sizes chosen to finish in about a quarter of an
hour on 2 CPU cores, see :data:`PROFILES`; its 32 bench queries resolve only differences
beyond about ±0.4 on Overall, and the closing lines say so), ``long`` (the whole 144-query
test split and 60 GRPO steps: about an hour) and ``tiny`` (a few samples and steps: the CI
end-to-end test, about a minute). ``tiny`` builds its own few-sample shards in
``<out>/shards`` and ignores ``--shards``: the full demo shards (144 test queries) would
make it the full demo's bench. ``summary.json`` in ``--out`` holds the table, the
comparisons, Pearson r, rewards and stage times.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BufferedIOBase
from pathlib import Path
from typing import IO, Any

from paras2s_pl.errors import UsageError

log = logging.getLogger(__name__)

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "mini"
SYSTEMS = ("base", "sft", "grpo", "baseline", "topline")
#: Paired bootstrap comparisons of Overall in the closing table and ``summary.json``: every
#: system against SFT, and SFT against the untrained policy (``paras2s bench table --compare``).
COMPARISONS = (("grpo", "sft"), ("baseline", "sft"), ("topline", "sft"), ("sft", "base"))
#: Stages that need no trained model: run beside the training chain (``jobs=2``).
SIDE_LANE = ("base", "respond_base", "bench_base", "respond_baseline", "bench_baseline",
             "respond_topline", "bench_topline")  # fmt: skip

#: Sizes per profile. ``full``: measured stage times are in the README.
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "contents_per_category": None,
        "bench_queries": 32,  # whole contrasting pairs of the 144-query test split
        "sft": ["--trainer.max_steps", "300", "--trainer.val_check_interval", "150"],
        # 96 queries x K=4 (the judge budget of 48 x 8): the reward model trains on 48 of
        # them and is measured on 24 contrasting pairs (48 queries) it never sees
        "prefs": ["--k", "4", "--num_queries", "96"],
        # a few hundred preference pairs: start from the SFT policy (its query encoding is
        # learnt) and stop early; from scratch the held-out Pearson r stayed near 0.1
        "reward": [
            "--trainer.max_steps",
            "100",
            "--trainer.val_check_interval",
            "50",
            "--model.init_args.warmup_steps",
            "10",
            "--data.init_args.val_queries",
            "24",
        ],  # fmt: skip
        "reward_init": True,
        "grpo": ["--trainer.max_steps", "20"],
        "respond": ["--sampling", '{"max_new_tokens": 200}'],
    },
    # the whole 144-query test split (36 per category) and 150 GRPO steps: what the paired
    # CIs need to resolve a ~10 % difference (±0.4 at 32 queries, measured) and what the
    # reward needs to rise (with the judge as reward it rose over 50-150 steps, not over 20);
    # about two hours on 2 CPU cores (one GRPO step ~20 s, one policy's bench ~8 min)
    "long": {},  # = full with the overrides below (filled in after the dict)
    "tiny": {
        "contents_per_category": 2,
        "own_shards": True,  # in <out>/shards: whatever --shards holds, tiny stays tiny
        "bench_queries": None,  # the whole (small) test split
        "sft": [
            "--trainer.max_steps",
            "20",
            "--trainer.val_check_interval",
            "20",
            "--data.init_args.val_limit",
            "4",
            "--model.init_args.val_generate",
            "1",
            "--model.init_args.sampling.max_new_tokens",
            "40",
            "--data.init_args.encode_workers",
            "0",
        ],  # fmt: skip
        "prefs": ["--k", "2", "--num_queries", "8", "--max_new_tokens", "40"],
        "reward": [
            "--trainer.max_steps",
            "10",
            "--trainer.val_check_interval",
            "5",
            "--data.init_args.batch_size",
            "4",
            "--data.init_args.encode_workers",
            "0",
            "--data.init_args.val_fraction",
            "0.5",
        ],  # fmt: skip
        "grpo": [
            "--trainer.max_steps",
            "2",
            "--data.init_args.batch_size",
            "2",
            "--model.init_args.group_size",
            "2",
            "--data.init_args.encode_workers",
            "0",
            "--model.init_args.sampling.max_new_tokens",
            "40",
        ],  # fmt: skip
        "reward_init": True,
        "respond": ["--sampling", '{"max_new_tokens": 40}'],
    },
}


PROFILES["long"] = {**PROFILES["full"], "bench_queries": None,
                    "grpo": ["--trainer.max_steps", "150"]}  # fmt: skip


#: Progress of the fit stages in optimizer steps (plain ``step k/N`` lines in a pipe).
STEP_BAR = ("--trainer.callbacks+", "paras2s_pl.callbacks.StepProgressBar")


class StageError(RuntimeError):
    """A demo stage exited with an error; the message holds its command."""


@dataclass
class Stage:
    """One step of the demo: a ``paras2s`` command line and what it produces."""

    name: str
    args: list[str]
    outputs: list[Path] = field(default_factory=list)

    def command(self) -> str:
        """The command as a user would type it."""
        return "paras2s " + " ".join(shlex.quote(a) for a in self.args)


def profile_shards(out: Path, shards: Path, profile: str) -> Path:
    """The shards ``profile`` uses: ``shards``, or ``<out>/shards`` for a profile with its own."""
    return out / "shards" if PROFILES[profile].get("own_shards") else shards


def demo_stages(out: Path, shards: Path, profile: str = "full") -> list[Stage]:
    """The stages of :func:`run_demo` for ``profile`` (see the module docstring)."""
    if profile not in PROFILES:
        raise UsageError(f"--profile {profile!r}; choose one of {list(PROFILES)}")
    p, tb = PROFILES[profile], str(out / "tb")
    shards = profile_shards(out, shards, profile)
    cfg = {name: str(REPO_CONFIGS / f"{name}.yaml") for name in ("sft", "reward", "grpo")}
    build = ["shards", "build-demo", "--out", str(shards)]
    if p["contents_per_category"]:
        build += ["--contents_per_category", str(p["contents_per_category"])]
    testset = out / "bench_set" if p["bench_queries"] else shards
    stages = [Stage("shards", build, [shards / "rl.manifest.json"])]
    if p["bench_queries"]:
        stages.append(Stage("bench_set", [
            "curate", "subset", "--pool", str(shards), "--split", "test",
            "--num_queries", str(p["bench_queries"]), "--out", str(testset), "--overwrite",
        ]))  # fmt: skip
    sft_common = ["fit", "--config", cfg["sft"], "--data.root", str(shards)]
    stages += [
        Stage("sft", [*sft_common, *STEP_BAR, "--trainer.logger.init_args.save_dir", tb,
                      "--model.init_args.export_dir", str(out / "sft_policy"), *p["sft"]]),
        Stage("base", [*sft_common, "--trainer.enable_progress_bar", "false",
                       "--trainer.max_steps", "0", "--trainer.logger", "false",
                       "--trainer.num_sanity_val_steps", "0", "--trainer.callbacks", "[]",
                       "--trainer.enable_checkpointing", "false", "--data.init_args.val_limit",
                       "1", "--data.init_args.train_split", "test",  # nothing is trained
                       "--trainer.default_root_dir", str(out / "base_run"),
                       "--model.init_args.export_dir", str(out / "base_policy")]),
        Stage("prefs", ["curate", "preferences", "--policy", str(out / "sft_policy"),
                        "--queries", str(shards), "--split", "train", "--judge", "rubric",
                        "--transcript", "policy", "--out", str(out / "prefs"), "--threads", "1",
                        *p["prefs"]]),
        Stage("reward", ["fit", "--config", cfg["reward"], "--data.root", str(out / "prefs"),
                         *STEP_BAR,
                         "--trainer.logger.init_args.save_dir", tb,
                         "--model.init_args.export_dir", str(out / "reward_model"),
                         *(["--model.init_args.model.init_args.init_from", str(out / "sft_policy")]
                           if p["reward_init"] else []),
                         *p["reward"]]),
        Stage("grpo", ["fit", "--config", cfg["grpo"], "--data.root", str(shards), *STEP_BAR,
                       "--trainer.logger.init_args.save_dir", tb,
                       "--model.init_args.init_from", str(out / "sft_policy"),
                       "--model.init_args.scorer.init_args.path", str(out / "reward_model"),
                       "--model.init_args.export_dir", str(out / "grpo_policy"), *p["grpo"]]),
    ]  # fmt: skip
    for system in SYSTEMS:
        responses = out / "responses" / system
        respond = ["bench", "respond", "--system", system, "--testset", str(testset),
                   "--out", str(responses), "--overwrite"]  # fmt: skip
        if system in ("base", "sft", "grpo"):
            # The shards' content stands in for Whisper, as in the mini GRPO config: the policy
            # is benchmarked on the transcripts it was trained on (pocketsphinx misses 25-60 %
            # of a styled query's words, and the contents are text-neutral by construction).
            respond += ["--policy", str(out / f"{system}_policy"), "--query_transcript", "shard",
                        *p["respond"]]  # fmt: skip
        stages.append(Stage(f"respond_{system}", respond))
        stages.append(Stage(f"bench_{system}", [
            "bench", "run", "--testset", str(testset), "--responses", str(responses),
            "--system", system, "--out", str(out / "bench"),
        ]))  # fmt: skip
    compare = ",".join(f"{a}:{b}" for a, b in COMPARISONS)
    stages.append(Stage("table", ["bench", "table", "--runs", str(out / "bench"),
                                  "--compare", compare]))  # fmt: skip
    return stages


def _marker(out: Path, stage: Stage) -> Path:
    return out / ".stages" / f"{stage.name}.json"


#: One console line at a time: the two lanes print from two threads.
_CONSOLE = threading.Lock()
#: Width of the stage column of echoed lines: the training chain's names (longer ones push it).
STAGE_WIDTH = 8
#: Seconds between echoed in-place updates (a tqdm bar's carriage-return lines) of one stage.
ECHO_EVERY_S = 15.0
_LINE_END = re.compile(rb"(\r\n|\n|\r)")


def say(text: str) -> None:
    """Print whole lines to the console, never torn by the other lane."""
    with _CONSOLE:
        print(text, flush=True)


def pump(stream: BufferedIOBase, log: IO[bytes], echo: Callable[[str], None] | None = None) -> None:
    """Copy a stage's output to its log as it comes, and ``echo`` it line by line.

    An in-place update (a tqdm bar's carriage-return line) is echoed at most every
    :data:`ECHO_EVERY_S`.
    """
    pending, last = b"", -math.inf
    for chunk in iter(lambda: stream.read1(1 << 16), b""):  # what has come, not 64 KiB
        log.write(chunk)
        log.flush()
        if echo is None:
            continue
        *parts, pending = _LINE_END.split(pending + chunk)
        for text, end in zip(parts[0::2], parts[1::2], strict=True):
            line = text.decode(errors="replace").rstrip()
            if not line.strip():
                continue
            if end == b"\r":
                if time.monotonic() - last < ECHO_EVERY_S:
                    continue
                last = time.monotonic()
            echo(line)
    if echo is not None and pending.strip():
        echo(pending.decode(errors="replace").rstrip())


def run_stage(stage: Stage, out: Path, quiet: bool = False) -> float:
    """Run one stage in its own process; raise :class:`StageError` naming it if it fails.

    Its output goes to ``<out>/logs/<stage>.log`` and, unless ``quiet``, to the console,
    each line prefixed with the stage's name.
    """
    log_path = out / "logs" / f"{stage.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    where = f" (output: {log_path})" if quiet else ""
    say(f"\n[paras2s demo] {stage.name}: {stage.command()}{where}")
    start = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    prefix = f"{stage.name:<{STAGE_WIDTH}} | "
    echo = None if quiet else lambda line: say(prefix + line)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(  # noqa: S603  (our own CLI, arguments from this module)
            [sys.executable, "-m", "paras2s_pl.cli", *stage.args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            pump(proc.stdout, log, echo)  # type: ignore[arg-type]  (a pipe: BufferedReader)
            code = proc.wait()
        except BaseException:  # Ctrl-C: stop the stage too
            proc.terminate()
            proc.wait()
            raise
    seconds = time.time() - start
    if code != 0:
        tail = log_path.read_text(errors="replace")[-2000:] if quiet else ""
        raise StageError(
            f"demo stage {stage.name!r} failed (exit {code}) after {seconds:.0f} s; "
            f"fix it and rerun `paras2s demo` (finished stages are skipped). Its output: "
            f"{log_path}. Command:\n  {stage.command()}\n{tail}"
        )
    say(f"[paras2s demo] {stage.name}: done in {seconds:.0f} s")
    marker = _marker(out, stage)
    marker.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": stage.command(), "seconds": round(seconds, 1),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    marker.write_text(json.dumps(record) + "\n")
    return seconds


def _done(stage: Stage, out: Path) -> bool:
    if stage.outputs and all(p.exists() for p in stage.outputs):
        return True
    return _marker(out, stage).exists()


def run_demo(
    out: str | Path = "runs/demo",
    shards: str | Path = "shards/demo",
    profile: str = "full",
    force: bool = False,
    quiet: bool = False,
    jobs: int = 2,
) -> dict[str, Any]:
    """Run (or resume) the demo; returns the summary also written to ``<out>/summary.json``.

    With ``jobs=2`` the stages that do not depend on training (:data:`SIDE_LANE`: the
    untrained policy and the reference systems, exported and benchmarked) run beside the
    SFT → reward → GRPO chain, their output in ``<out>/logs/``; each stage is one process on
    one thread, so this uses the second core. ``jobs=1`` runs everything in order.
    """
    out, shards = Path(out), Path(shards)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    start = time.time()
    stages = demo_stages(out, shards, profile)
    if profile_shards(out, shards, profile) != shards:
        say(f"[paras2s demo] profile {profile}: its own few-sample shards in {out / 'shards'} "
            f"(not {shards})")  # fmt: skip

    def run(lane: list[Stage], lane_quiet: bool) -> None:
        for stage in lane:
            if not force and _done(stage, out):
                say(f"[paras2s demo] {stage.name}: done, skipped (--force reruns)")
                continue
            if force and stage.name == "shards" and stage.outputs[0].exists():
                stage.args.append("--overwrite")
            times[stage.name] = round(run_stage(stage, out, lane_quiet), 1)

    first = [s for s in stages if s.name in ("shards", "bench_set")]
    last = [s for s in stages if s.name == "table"]
    side = [s for s in stages if s.name in SIDE_LANE and jobs > 1]
    chain = [s for s in stages if s not in (*first, *side, *last)]
    run(first, quiet)
    failure: list[BaseException] = []

    def side_lane() -> None:
        try:
            run(side, True)
        except BaseException as err:  # re-raised below, after the main lane
            failure.append(err)

    worker = threading.Thread(target=side_lane, name="demo-side-lane")
    worker.start()
    try:
        run(chain, quiet)
    finally:
        worker.join()
    if failure:
        raise failure[0]
    run(last, quiet)
    summary = summarize(out)
    summary.update({"profile": profile, "stage_seconds": times,
                    "seconds": round(time.time() - start, 1)})  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(report(summary, out))
    return summary


def summarize(out: Path) -> dict[str, Any]:
    """Table 3 with its paired CIs, the reward model's held-out r, the GRPO rewards of a demo."""
    from paras2s_pl.bench.compare import compare_runs
    from paras2s_pl.modules.export import read_fit_metrics

    table = json.loads((out / "bench" / "table.json").read_text())
    # recomputed, not read from table.json: a table stage kept from an older run has none
    comparisons = []
    for pair in COMPARISONS:
        try:
            comparisons += compare_runs(out / "bench", [pair])
        except ValueError as err:  # nothing scored by both: say so, keep the rest
            log.warning("demo summary: %s", err)
    from paras2s_pl.bench.wordshare import run_shares

    reward = read_fit_metrics(out / "reward_model")
    grpo = read_fit_metrics(out / "grpo_policy")
    first, last = first_last(out / "tb" / "grpo")
    # the exported model is the best validation's (RewardModule.export_best); its report
    # holds r overall / within query / per category with bootstrap CIs over held-out queries
    heldout = reward.get("heldout") or {}
    exported = reward.get("exported") or {}
    fallback_r = exported.get("value", reward.get("metrics", {}).get("val/pearson"))
    shares = {}
    for system in ("base", "sft", "grpo"):
        try:
            shares[system] = run_shares(out / "bench" / system)
        except (OSError, ValueError) as err:  # a summary must not fail on a missing run
            log.warning("demo summary: word shares of %s: %s", system, err)
    return {
        "table3": {s: table["table3"].get(s) for s in SYSTEMS},
        "counts": table.get("counts", {}),
        "comparisons": [c.as_dict() for c in comparisons],
        "reward_model_pearson": (heldout.get("overall") or {}).get("r", fallback_r),
        "reward_model_pearson_ci95": (heldout.get("overall") or {}).get("ci95"),
        "reward_model_within_pearson": (heldout.get("within") or {}).get("r"),
        "reward_model_within_ci95": (heldout.get("within") or {}).get("ci95"),
        "reward_model_heldout_queries": heldout.get("queries"),
        "reward_model_exported_step": exported.get("step"),
        "reward_model_last_pearson": reward.get("metrics", {}).get("val/pearson"),
        "word_shares": shares,
        "grpo_first_reward": first,
        "grpo_final_reward": grpo.get("metrics", {}).get("train/reward", last),
        "grpo_steps": grpo.get("global_step"),
    }


def first_last(tb: Path, tag: str = "train/reward") -> tuple[float | None, float | None]:
    """``tag`` at the first and the last step of the newest run under ``tb`` that logged it.

    A step written twice (by a resumed run) keeps its later value; (None, None) without one.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    def version(path: Path) -> int:
        match = re.fullmatch(r"version_(\d+)", path.name)
        return int(match.group(1)) if match else -1

    for run in sorted(tb.glob("version_*"), key=version, reverse=True):
        logged = []  # (wall time, step, value)
        for file in run.glob("events.out.tfevents.*"):
            for event in EventFileLoader(str(file)).Load():  # scalars as tensors
                logged += [(event.wall_time, event.step, float(make_ndarray(v.tensor)))
                           for v in event.summary.value if v.tag == tag]  # fmt: skip
        by_step = {step: value for _, step, value in sorted(logged)}
        if by_step:
            return by_step[min(by_step)], by_step[max(by_step)]
    return None, None


def comparison_line(c: dict[str, Any]) -> str:
    """One comparison of ``summary.json``: ``grpo − sft  +0.042 [-0.254, +0.329] …``."""
    from paras2s_pl.bench.compare import Comparison

    return Comparison(**{k: v for k, v in c.items() if k != "verdict"}).line()


def report(summary: dict[str, Any], out: Path) -> str:
    """The closing message: the table, Pearson r, the GRPO reward, TensorBoard."""
    cols = ("Age", "Emotion", "Gender", "Sarcasm", "Overall")
    lines = ["", "| System | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for system, row in summary["table3"].items():
        cells = [f"{row[c]:.3f}" if row and row.get(c) is not None else "–" for c in cols]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")

    def r(key: str) -> str:
        value = summary.get(key)
        return f"{value:.3f}" if value is not None else "n/a"

    def ci(key: str) -> str:
        value = summary.get(key)
        return f" [{value[0]:+.2f}, {value[1]:+.2f}]" if value else ""

    comparisons = summary.get("comparisons") or []
    if comparisons:
        lines += ["", "Overall, paired by query (95 % bootstrap CI over contrasting pairs):"]
        lines += ["  " + comparison_line(c) for c in comparisons]
        half = sorted((c["high"] - c["low"]) / 2 for c in comparisons)[len(comparisons) // 2]
        queries = max(c["queries"] for c in comparisons)
        lines.append(
            f"  {queries} bench queries resolve differences beyond about ±{half:.2f} (median CI "
            "half-width); a smaller one reads 'no difference', whatever its sign."
            + (" `--profile long` benches the whole 144-query test split."
               if summary.get("profile") == "full" else "")
        )  # fmt: skip
    shares = summary.get("word_shares") or {}
    if shares:
        from paras2s_pl.bench.wordshare import format_shares

        lines += ["", "Do the policies speak words? (bench responses; bench/wordshare.py)"]
        lines += ["  " + format_shares(name, s) for name, s in shares.items()]
    queries = summary.get("reward_model_heldout_queries")
    lines += [
        "",
        "Judge: the offline rubric stand-in (see paras2s_pl/bench/rubric.py).",
        f"Reward model vs judge on {queries or '?'} held-out queries: Pearson r "
        f"{r('reward_model_pearson')}{ci('reward_model_pearson_ci95')}, within query "
        f"{r('reward_model_within_pearson')}{ci('reward_model_within_ci95')} (exported: the "
        f"best validation, step {summary.get('reward_model_exported_step')}; last "
        f"{r('reward_model_last_pearson')})",
        f"GRPO: {summary.get('grpo_steps')} steps, train/reward {r('grpo_first_reward')} → "
        f"{r('grpo_final_reward')} (first → last step)",
        f"Full tables: {out / 'bench' / 'table.md'}",
        f"TensorBoard: tensorboard --logdir {out / 'tb'}",
    ]
    return "\n".join(lines)
