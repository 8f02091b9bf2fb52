"""Notebooks: the readers and figures of :mod:`paras2s_pl.plots`, and both notebooks executed
with nbclient on a tiny GRPO TensorBoard run and a synthetic sweep ``results.json``.

The GRPO run is made the way a user makes one (``Trainer.fit`` with a ``TensorBoardLogger``)
with a small random policy on labelled sine-tone prompts and the toy token-fraction reward,
so every tag of a real run is there, per-category rewards included, in about a second.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import lightning as L
import matplotlib
import matplotlib.pyplot as plt
import nbformat
import pandas as pd
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from paras2s_pl import plots
from paras2s_pl.data.prompts import PromptDataModule
from paras2s_pl.modules.grpo import GRPOModule
from paras2s_pl.rl.scorers import TokenFractionScorer
from paras2s_pl.testing import SMALL_POLICY, write_tiny_set

matplotlib.use("Agg")  # the in-process figure tests; the notebooks' kernel shows them inline

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
STEPS = 4
REWARD_FIGURES = ["grpo_reward", "grpo_reward_by_category", "grpo_kl", "grpo_clip",
                  "grpo_lengths", "grpo_optimization", "grpo_time"]  # fmt: skip
SWEEP_FIGURES = ["fig2a_sft_data", "fig2b_budget_split", "fig3_hyperparameters",
                 "sweep_other_params"]  # fmt: skip


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def grpo_logs(tmp_path_factory) -> Path:
    """``<tmp>/grpo/version_0`` of a 4-step GRPO fit on labelled prompts (B=2, G=4)."""
    tmp = tmp_path_factory.mktemp("grpo")
    write_tiny_set(tmp / "prompts", "train", n=8, schema="query")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        L.seed_everything(0)
        data = PromptDataModule(str(tmp / "prompts"), "train", batch_size=2)
        module = GRPOModule(
            init_from=None,
            model_config=SMALL_POLICY,
            scorer=TokenFractionScorer("audio", 0, 132),
            group_size=4,
            sampling={"max_new_tokens": 12},
            log_examples_every_n_rollouts=2,
            export=False,
        )
        trainer = L.Trainer(
            max_steps=STEPS,
            accumulate_grad_batches=2,
            accelerator="cpu",
            logger=TensorBoardLogger(save_dir=str(tmp / "runs"), name="grpo"),
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=1,
            default_root_dir=str(tmp),
        )
        trainer.fit(module, data)
    finally:
        torch.set_num_threads(threads)
    assert trainer.global_step == STEPS
    return Path(trainer.log_dir)


def _run(name, params, bench=None, reward=3.0, status="ok", tags=None):
    return {
        "name": name,
        "params": params,
        "tags": tags or {},
        "status": status,
        "returncode": 1 if status == "failed" else 0,
        "seconds": 1.5,
        "run_dir": f"runs/sweep/{name}",
        "export_dir": f"runs/sweep/{name}/export",
        "global_step": 20,
        "metrics": {"train/reward": reward, "train/kl": 0.02} if status != "failed" else {},
        "best": {},
        "bench": bench,
    }


def _bench(overall: float) -> dict:
    cats = {"Age": overall - 0.1, "Emotion": overall + 0.1, "Gender": overall, "Sarcasm": overall}
    return {**cats, "Synthetic avg": overall, "Overall": overall}


def _sweep(stage: str, grid: dict, runs: list, config: str = "configs/mini/grpo.yaml") -> dict:
    return {"config": config, "stage": stage, "grid": grid, "overrides": ["trainer.max_steps=20"],
            "tags": {"stage": stage}, "created": "2026-11-23T17:00:00", "runs": runs}  # fmt: skip


def write_sweeps(root: Path) -> list[Path]:
    """Two sweep folders: Fig. 3 (G, β, B; a failed, a skipped-done and a planned run, a run
    without bench, an extra ``clip_eps`` sweep) and Figs. 2a/2b (tags sft_hours / sft_share,
    stages sft and grpo)."""
    g, beta, b = "model.init_args.group_size", "model.init_args.beta", "data.init_args.batch_size"
    hyper = [
        *(_run(f"group_size={v}", {g: v}, _bench(2.0 + 0.1 * v)) for v in (2, 4, 8)),
        _run("group_size=16", {g: 16}, status="failed"),
        *(_run(f"beta={v}", {beta: v}, _bench(2.6 - v)) for v in (0.0, 0.1, 0.2)),
        _run("beta=0.4", {beta: 0.4}, bench=None, reward=2.1),  # bench failed: train/reward
        _run("batch_size=2", {b: 2}, _bench(2.4)),
        _run("batch_size=4", {b: 4}, _bench(2.5), status="skipped-done"),  # an earlier sweep's
        {"name": "batch_size=8", "params": {b: 8}, "tags": {}, "status": "planned"},  # dry run
        *(_run(f"clip_eps={v}", {"model.init_args.clip_eps": v}, _bench(2.4)) for v in (0.1, 0.3)),
    ]
    budget = []
    for hours in (0.5, 1, 2):
        for stage, gain in (("sft", 0.0), ("grpo", 0.3)):
            tags = {"stage": stage, "sft_hours": hours}
            budget.append(_run(f"{stage}-h{hours}", {}, _bench(2 + hours / 4 + gain), tags=tags))
    for share in (0.25, 0.5, 0.75):
        for stage, gain in (("sft", 0.0), ("grpo", 0.2)):
            tags = {"stage": stage, "sft_share": share}
            budget.append(_run(f"{stage}-s{share}", {}, _bench(2 + share + gain), tags=tags))
    paths = []
    for name, sweep in (
        ("hyper", _sweep("grpo", {g: [2, 4, 8, 16], beta: [0.0, 0.1, 0.2, 0.4]}, hyper)),
        ("budget", _sweep("grpo", {}, budget)),  # the runs' own stage tags win
    ):
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_text(json.dumps(sweep, indent=1))
        paths.append(root / name)
    return paths


# ---- readers ---------------------------------------------------------------------------------


def _events(run: Path, steps: bool = True) -> None:
    """Event files as a run leaves them: with a logged step, or stopped at start-up (only the
    ``hp_metric`` placeholder Lightning writes first)."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run)) as writer:
        writer.add_scalar("hp_metric", -1.0, 0)
        if steps:
            writer.add_scalar("train/reward", 2.5, 0)


def test_find_log_dir_takes_the_newest_version_with_events(tmp_path):
    for name, events in (("version_0", True), ("version_2", True), ("version_10", True),
                         ("version_11", False), ("other", True)):  # fmt: skip
        (tmp_path / name).mkdir()
        if events:
            _events(tmp_path / name)
    assert plots.find_log_dir(tmp_path) == tmp_path / "version_10"  # numeric, not "version_2"
    assert plots.find_log_dir(tmp_path / "version_2") == tmp_path / "version_2"
    with pytest.raises(FileNotFoundError, match="configs/mini/grpo.yaml"):
        plots.find_log_dir(tmp_path / "version_11")
    with pytest.raises(FileNotFoundError, match="configs/mini/grpo.yaml"):
        plots.find_log_dir(tmp_path / "missing")


def test_a_newest_run_stopped_at_start_up_is_skipped_in_one_line(tmp_path, caplog):
    """The issue's case: ``runs/grpo/version_N`` (newest) has event files but no step."""
    _events(tmp_path / "version_3")
    _events(tmp_path / "version_4", steps=False)
    (tmp_path / "version_5").mkdir()
    (tmp_path / "version_5" / "events.out.tfevents.1.host.0").write_bytes(b"")  # killed at once
    assert not plots.has_steps(tmp_path / "version_4")
    assert plots.find_log_dir(tmp_path) == tmp_path / "version_3"
    (message,) = [r.getMessage() for r in caplog.records if r.name == "paras2s_pl.plots.rewards"]
    assert message == ("skipped version_5, version_4: no logged step (stopped at start-up); "
                       "reading version_3")  # fmt: skip
    with pytest.raises(FileNotFoundError, match="no logged step .*stopped at start-up"):
        plots.find_log_dir(tmp_path / "version_4")
    shutil.rmtree(tmp_path / "version_3")
    with pytest.raises(FileNotFoundError, match="version_5, version_4 stopped at start-up"):
        plots.find_log_dir(tmp_path)
    empty = plots.read_scalars(tmp_path / "version_5")  # what the notebook's cell then reads
    assert empty.empty and not empty["tag"].str.startswith("train/").any()


def test_read_scalars_of_a_grpo_run(grpo_logs):
    assert plots.find_log_dir(grpo_logs.parent) == grpo_logs
    scalars = plots.read_scalars(grpo_logs)
    assert list(scalars.columns) == ["step", "tag", "value"]
    tags = set(scalars["tag"])
    for tag in ("train/reward", "train/reward_std", "train/kl", "train/clip_ratio/region_mean",
                "train/completions/mean_length", "train/loss", "train/time/rollout"):  # fmt: skip
        assert tag in tags, tag
        assert sorted(scalars.loc[scalars["tag"] == tag, "step"]) == list(range(STEPS)), tag
    assert plots.categories(scalars)  # labelled prompts: train/reward/<category>
    assert set(plots.categories(scalars)) <= {"emotion", "sarcasm", "age", "gender"}
    band = plots.reward_band(scalars)
    assert list(band.index) == list(range(STEPS))
    rows = scalars.set_index(["tag", "step"])["value"]
    for step in range(STEPS):
        assert band.loc[step, "mean"] == pytest.approx(rows["train/reward", step])
        assert band.loc[step, "std"] == pytest.approx(rows["train/reward_std", step])
    assert plots.missing_tags(scalars) == []
    assert plots.missing_tags(scalars[scalars["tag"] != "train/kl"]) == ["train/kl"]
    summary = plots.summarize(scalars)
    assert summary.loc["train/reward", "steps"] == STEPS


def test_reward_band_keeps_the_last_value_of_a_rewritten_step():
    frame = pd.DataFrame(
        {
            "step": [0, 1, 1, 2, 0, 1, 2],
            "tag": ["train/reward"] * 4 + ["train/reward_std"] * 3,
            "value": [1.0, 2.0, 2.5, 3.0, 0.1, 0.2, float("nan")],
            "wall_time": [0, 1, 9, 10, 0, 1, 10],  # step 1 logged again after a resume
        }
    )
    band = plots.reward_band(plots.tidy_scalars(frame))
    assert band["mean"].tolist() == [1.0, 2.5, 3.0]
    assert band["std"].tolist() == [0.1, 0.2, 0.0]
    only_mean = plots.reward_band(frame[frame["tag"] == "train/reward"].drop(columns="wall_time"))
    assert only_mean["std"].tolist() == [0.0, 0.0, 0.0]
    assert plots.reward_band(frame[frame["tag"] == "train/kl"]).empty


def test_load_results_concatenates_sweeps_and_drops_failed_runs(tmp_path):
    hyper, budget = write_sweeps(tmp_path)
    everything = plots.load_results(f"{hyper}, {budget / 'results.json'}", include_failed=True)
    runs = plots.load_results([hyper, budget])
    assert len(everything) == len(runs) + 2 == 12 + 12 + 1
    assert everything.loc[~everything["ok"], "name"].tolist() == ["group_size=16", "batch_size=8"]
    assert not {"group_size=16", "batch_size=8"} & set(runs["name"])
    assert "batch_size=4" in set(runs["name"])  # skipped-done: finished by an earlier run
    assert set(runs["results"]) == {str(hyper / "results.json"), str(budget / "results.json")}
    # a run without bench falls back to its final train/reward, and says so
    no_bench = runs.set_index("name").loc["beta=0.4"]
    assert no_bench["score"] == 2.1 and no_bench["score_source"] == "train/reward"
    assert runs.set_index("name").loc["beta=0.1", "score"] == pytest.approx(2.5)
    beta = runs[runs["param/model.init_args.beta"].notna()]
    assert "hollow: train/reward" in plots.metric_label(beta)
    assert plots.metric_label(runs[runs["name"] == "beta=0.4"]).startswith("final train/reward")
    # stage: the run's tag, else the file's
    assert set(runs.loc[runs["results"].str.contains("budget"), "stage"]) == {"sft", "grpo"}
    assert set(runs.loc[runs["results"].str.contains("hyper"), "stage"]) == {"grpo"}
    assert plots.swept_params(runs) == [
        "model.init_args.group_size", "model.init_args.beta", "data.init_args.batch_size",
        "model.init_args.clip_eps",
    ]  # fmt: skip
    # the parent folder finds both; a folder without results names the command
    assert len(plots.find_results(str(tmp_path))) == 2
    with pytest.raises(FileNotFoundError, match="paras2s sweep"):
        plots.find_results(str(tmp_path / "nope"))


def test_param_values_match_with_or_without_init_args():
    runs = pd.DataFrame({"param/model.group_size": [2, None], "param/model.init_args.group_size":
                         [None, 8], "score": [1.0, 2.0]})  # fmt: skip
    assert plots.param_values(runs, "model.init_args.group_size").tolist() == [2, 8]


def test_sweep_figures_draw_points_and_say_no_runs(tmp_path):
    runs = plots.load_results(write_sweeps(tmp_path))
    fig = plots.plot_hyperparameters(runs)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["batch size B (2 runs)", "group size G (3 runs)", "KL coefficient β (4 runs)"]
    fig = plots.plot_hyperparameters(runs[runs["name"].str.startswith("group")])
    assert [ax.get_title().endswith("(no runs)") for ax in fig.axes] == [True, False, True]
    fig2a = plots.plot_sft_data(runs)
    labels = sorted(t.get_text() for t in fig2a.axes[0].get_legend().get_texts())
    assert labels == ["SFT + GRPO", "SFT only"]
    assert plots.plot_budget_split(runs).axes[0].get_title().endswith("(6 runs)")
    other = plots.plot_other_params(runs)
    assert [ax.get_title() for ax in other.axes] == ["clip_eps (2 runs)"]
    empty = runs.iloc[:0]
    for draw in (plots.plot_sft_data, plots.plot_budget_split, plots.plot_other_params):
        assert "no runs" in draw(empty).axes[0].get_title()


def test_reward_figures_of_a_run_without_labels_or_timing():
    scalars = pd.DataFrame({"step": [0, 1], "tag": ["train/reward"] * 2, "value": [1.0, 2.0]})
    assert "not logged" in plots.plot_category_rewards(scalars).axes[0].get_title()
    assert "not logged" in plots.plot_kl(scalars).axes[0].get_title()
    assert "not logged" in plots.plot_time(scalars).axes[0].get_title()
    assert plots.plot_reward(scalars, smooth=0.6).axes[0].get_title() == "reward per rollout"


# ---- the notebooks ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rewards", "ablations"])
def test_notebooks_are_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert "os.environ.get(" in code[0].source


def _execute(name: str) -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    images = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get(
            "data", {})
    ]  # fmt: skip
    assert images, f"{name}: no figure was shown"


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_notebooks_run_on_small_results(grpo_logs, tmp_path, monkeypatch):
    sweeps = write_sweeps(tmp_path / "sweeps")
    fig_dir = tmp_path / "figures"
    logs = tmp_path / "grpo"
    shutil.copytree(grpo_logs, logs / "version_0")
    _events(logs / "version_1", steps=False)  # a newer run that stopped at start-up
    monkeypatch.setenv("PARAS2S_GRPO_LOGS", str(logs))  # picks version_0
    monkeypatch.setenv("PARAS2S_SWEEP_RESULTS", ",".join(str(p) for p in sweeps))
    monkeypatch.setenv("PARAS2S_FIG_DIR", str(fig_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows figures
    _execute("rewards")
    _execute("ablations")
    written = sorted(p.stem for p in fig_dir.glob("*.png"))
    assert written == sorted(REWARD_FIGURES + SWEEP_FIGURES)
    assert all(os.path.getsize(fig_dir / f"{n}.png") > 5000 for n in written)
