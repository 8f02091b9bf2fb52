"""Paired bootstrap of Overall (``bench/compare.py``) on constructed cases with known answers,
and ``paras2s bench table --compare/--against``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bench_stubs import score_rows, write_runs

from paras2s_pl.bench import compare, tables
from paras2s_pl.cli import main
from paras2s_pl.data import labels


def pairs_of(rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
    """``n`` pairs of judge-like scores 1..5."""
    return [tuple(float(x) for x in rng.integers(1, 6, size=2)) for _ in range(n)]


def shifted(rows: list[dict], by: dict[str, list[tuple[float, float]]] | float, system: str):
    """``rows`` of another system: each score plus ``by`` (a number, or per category per pair
    per style)."""
    out = []
    for r in rows:
        pair, style = (
            int(r["pair_id"].rsplit("-", 1)[1]),
            labels.STYLES[r["category"]].index(r["style"]),
        )
        delta = by if isinstance(by, float) else by[r["category"]][pair][style]
        out.append({**r, "system": system, "score": r["score"] + delta})
    return out


@pytest.fixture
def sft():
    """16 pairs in four categories of unequal size, as the demo's 32-query bench."""
    rng = np.random.default_rng(1)
    sizes = {"age": 6, "gender": 5, "emotion": 3, "sarcasm": 2}
    return score_rows("sft", {c: pairs_of(rng, n) for c, n in sizes.items()})


def test_a_constant_shift_is_the_difference_and_the_whole_interval(sft):
    """A = B + 0.5 on every query: every resample's category means differ by 0.5 exactly."""
    got = compare.paired_bootstrap(shifted(sft, 0.5, "grpo"), sft, "grpo", "sft")
    assert (got.difference, got.low, got.high, got.se) == (0.5, 0.5, 0.5, 0.0)
    assert (got.pairs, got.queries, got.dropped, got.verdict) == (16, 32, 0, "higher")
    assert compare.paired_bootstrap(sft, shifted(sft, 0.5, "grpo")).verdict == "lower"
    assert got.line() == "grpo − sft  +0.500 [+0.500, +0.500]  se 0.000  (16 pairs)  higher"


def test_symmetric_zero_mean_noise_gives_an_interval_around_0(sft):
    """d = +1 on one style and −1 on the other of every pair: each pair sums to 0, so every
    resample's difference is 0; d = ±1 by whole pairs, mirrored within each category, has
    mean 0 and a wide interval around it."""
    by_style = {c: [(1.0, -1.0)] * 6 for c in ("age", "gender", "emotion", "sarcasm")}
    got = compare.paired_bootstrap(shifted(sft, by_style, "grpo"), sft)
    assert (got.difference, got.low, got.high, got.verdict) == (0.0, 0.0, 0.0, "no difference")
    up, down, even = (1.0, 1.0), (-1.0, -1.0), (0.0, 0.0)
    by_pair = {"age": [up, down] * 3, "gender": [up, down, up, down, even],
               "emotion": [up, down, even], "sarcasm": [up, down]}  # fmt: skip
    got = compare.paired_bootstrap(shifted(sft, by_pair, "grpo"), sft)
    assert got.difference == 0.0 and got.low < -0.2 and got.high > 0.2
    assert got.verdict == "no difference"


def test_bootstrap_se_and_interval_are_the_analytic_ones_of_a_macro_mean_over_pairs():
    """Pairs of two queries, so a category mean is the mean of its pair means; resampling
    n_c pairs gives Var = σ²_c / n_c (σ of the pair means with ddof 0, the bootstrap's
    plug-in), and Overall, the mean of C independent category means, SE = √(Σ_c σ²_c / n_c) / C.
    With R = 10,000 resamples the SE estimate's own relative error is about 1/√(2R) ≈ 0.7 %;
    3 % is > 4 of those. The two queries of a pair share most of their noise (one content),
    so resampling queries instead of pairs would give an SE ≈ 0.7 × this one.

    With 65 pairs of normal noise the bootstrap distribution is close to normal, so the
    percentile interval is about ± z SE (z = 1.96 at 95 %, 1.645 at 90 %); a quantile's
    Monte Carlo error is ≈ 1.5 % of the half-width, hence 5 %."""
    rng = np.random.default_rng(7)
    n = {"age": 40, "gender": 25}
    base = score_rows("b", {c: pairs_of(rng, k) for c, k in n.items()})
    noise = {}
    for c, k in n.items():
        shared = rng.normal(0, 1 + (c == "age"), k)
        noise[c] = [tuple(u + rng.normal(0, 0.3, 2)) for u in shared]
    grpo = shifted(base, noise, "a")
    got = compare.paired_bootstrap(grpo, base)
    var = [np.var([np.mean(p) for p in noise[c]]) / k for c, k in n.items()]
    analytic = np.sqrt(sum(var)) / len(n)
    assert got.se == pytest.approx(analytic, rel=0.03)
    assert got.difference == pytest.approx(np.mean([np.mean(noise[c]) for c in n]))
    for confidence, z in ((0.95, 1.96), (0.90, 1.645)):
        got = compare.paired_bootstrap(grpo, base, confidence=confidence)
        assert got.high - got.low == pytest.approx(2 * z * analytic, rel=0.05)
        assert (got.low + got.high) / 2 == pytest.approx(got.difference, abs=0.05 * z * analytic)


def test_a_resample_keeps_each_categorys_pairs_and_is_table3s_overall(sft):
    """Materialise one resample as rows: every category keeps its pair count, and Table 3's
    Overall(A) − Overall(B) on those rows is the bootstrap's value for it."""
    grpo = shifted(sft, {c: pairs_of(np.random.default_rng(2), 6) for c in
                         ("age", "gender", "emotion", "sarcasm")}, "grpo")  # fmt: skip
    units, _ = compare.strata(grpo, sft)
    draws = compare.draw(units, 3, np.random.default_rng(0))
    values = compare.overall_difference(units, draws)
    for i in range(3):
        picked = {}
        for s, idx in zip(units, draws, strict=True):
            picked[s.category] = [s.pairs[j] for j in idx[i]]
            assert len(idx[i]) == len(s.pairs)
        assert {c: len(p) for c, p in picked.items()} == {"age": 6, "gender": 5, "emotion": 3,
                                                          "sarcasm": 2}  # fmt: skip

        def resampled(rows: list[dict], picked: dict = picked) -> list[dict]:
            return [r for c, ps in picked.items() for p in ps for r in rows if r["pair_id"] == p]

        overall = [tables.table3_row(resampled(rows))["Overall"] for rows in (grpo, sft)]
        assert values[i] == pytest.approx(overall[0] - overall[1], abs=1e-12)


def test_strata_keep_a_category_with_few_pairs_in_every_resample():
    """+1 on 2 sarcasm pairs, −1 on 10 age pairs: every stratified resample has Overall
    difference (1 − 1) / 2 = 0. Pooled resampling would lose sarcasm in (10/12)^12 ≈ 11 %
    of them (difference −1), putting the lower bound at −1."""
    b = score_rows("b", {"sarcasm": [(3.0, 3.0)] * 2, "age": [(3.0, 3.0)] * 10})
    a = shifted(b, {"sarcasm": [(1.0, 1.0)] * 2, "age": [(-1.0, -1.0)] * 10}, "a")
    got = compare.paired_bootstrap(a, b)
    assert (got.difference, got.low, got.high) == (0.0, 0.0, 0.0)


def test_queries_unscored_in_either_are_dropped_from_both(sft):
    """A query missing from one system leaves both; the difference is Table 3's on the rest."""
    grpo = shifted(sft, 1.0, "grpo")
    grpo[0] = {**grpo[0], "score": None, "status": "missing"}
    sft = [*sft[:3], {**sft[3], "score": None, "status": "parse_failed"}, *sft[4:]]
    got = compare.paired_bootstrap(grpo, sft, seed=3)
    assert (got.dropped, got.queries, got.pairs, got.difference) == (2, 30, 16, 1.0)
    kept = [r for r in sft if r["key"] not in {sft[0]["key"], sft[3]["key"]}]
    worse = [{**r, "score": r["score"] - 2} for r in kept]  # the dropped ones would pull it up
    assert compare.paired_bootstrap(worse, sft).difference == -2.0
    assert compare.paired_bootstrap(grpo, sft, seed=3) == got  # seeded: the same interval
    with pytest.raises(ValueError, match="no query is scored by both"):
        compare.paired_bootstrap(grpo, [{**r, "status": "error"} for r in sft])


def test_parse_pairs_compare_then_against_without_mirrors():
    systems = ["baseline", "base", "grpo", "sft", "topline"]
    got = compare.parse_pairs("sft:base", "sft", systems)
    assert got == [("sft", "base"), ("baseline", "sft"), ("grpo", "sft"), ("topline", "sft")]
    assert compare.parse_pairs("/x/run1/grpo:grpo", None, systems) == [("/x/run1/grpo", "grpo")]
    with pytest.raises(ValueError, match="give A:B"):
        compare.parse_pairs("grpo", None, systems)
    with pytest.raises(ValueError, match="--against 'sf'"):
        compare.parse_pairs(None, "sf", systems)


def test_bench_table_prints_the_comparisons_of_two_systems_and_of_two_runs(tmp_path, capsys, sft):
    """``--compare`` between systems of --runs and with a system of another runs directory;
    ``--against``; the comparisons also in table.json."""
    runs, other = tmp_path / "runs", tmp_path / "other"
    write_runs(runs, {"sft": sft, "grpo": shifted(sft, 0.5, "grpo"), "base": sft})
    write_runs(other, {"grpo": shifted(sft, -1.0, "grpo")})
    main(["bench", "table", "--runs", str(runs), "--compare", f"grpo:sft,{other / 'grpo'}:grpo"])
    printed = capsys.readouterr().out
    assert "| grpo − sft | +0.500 | [+0.500, +0.500] | 0.000 | 16 | 0 | higher |" in printed
    assert f"| {other / 'grpo'} − grpo | -1.500 | [-1.500, -1.500] | 0.000 | 16 | 0 | lower |" in (
        printed
    )
    assert "10000 resamples, seed 0" in printed
    saved = json.loads((runs / "table.json").read_text())["comparisons"]
    assert [(c["a"], c["b"], c["verdict"]) for c in saved][0] == ("grpo", "sft", "higher")
    main(["bench", "table", "--runs", str(runs), "--against", "sft", "--n_resamples", "200"])
    printed = capsys.readouterr().out
    assert "| base − sft | +0.000 | [+0.000, +0.000] | 0.000 | 16 | 0 | no difference |" in printed
    assert "| grpo − sft |" in printed and "200 resamples" in printed
    main(["bench", "table", "--runs", str(runs)])  # nothing asked: no section
    assert "Paired comparisons" not in capsys.readouterr().out


def test_bench_table_names_an_unknown_side(tmp_path, sft):
    write_runs(tmp_path, {"sft": sft})
    with pytest.raises(FileNotFoundError, match="'grpo': neither a system of"):
        tables.write_tables(tmp_path, compare="grpo:sft")
