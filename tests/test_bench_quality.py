"""The cross-validation section (pipelines.bench.quality): folds, LightGBM's tuning, and a quick run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.bench import baselines, quality
from trainer import schema


def test_folds_are_disjoint_cover_every_row_and_follow_the_seed():
    splits = quality.folds(103, k=5, seed=3)
    assert len(splits) == 5
    held_out = np.concatenate([test for _, test in splits])
    assert sorted(held_out) == list(range(103))  # every row held out exactly once
    for train, test in splits:
        assert not set(train) & set(test)
        assert len(train) + len(test) == 103
    again = quality.folds(103, k=5, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))
    assert not np.array_equal(splits[0][1], quality.folds(103, k=5, seed=4)[0][1])


def test_search_draws_distinct_configurations_from_the_space():
    configs = quality.search_configs(quality.CONFIGS)
    assert len(configs) == quality.CONFIGS
    assert len({tuple(sorted(c.items())) for c in configs}) == quality.CONFIGS
    for config in configs:
        assert all(config[name] in values for name, values in quality.SEARCH_SPACE.items())
    assert configs == quality.search_configs(quality.CONFIGS)


def test_tuning_picks_the_best_inner_score():
    rng = np.random.default_rng(0)
    x = rng.random((400, 3))
    y = 10 * x[:, 0] + rng.normal(0, 0.1, 400)
    tuned = quality.tune_lightgbm(x, y, configs=3, max_trees=50)
    assert tuned["inner_rmse"] == min(t["inner_rmse"] for t in tuned["tried"])
    assert 0 < tuned["inner_rows"] < 400 and 1 <= tuned["trees"] <= 50


@pytest.mark.slow
def test_quick_cross_validation_scores_every_model_on_held_out_rows_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TAXIFARE_SHARED_DATA", str(tmp_path / "no-course-data"))  # synthetic rows
    seen: dict[str, list] = {"folds": [], "tuned": []}
    run_fold, tune = quality.run_fold, quality.tune_lightgbm

    def spy_fold(lines, train_index, test_index, *args, **kwargs):
        seen["folds"].append((lines, train_index, test_index))
        return run_fold(lines, train_index, test_index, *args, **kwargs)

    def spy_tune(x, y, **kwargs):
        seen["tuned"].append(x)
        return tune(x, y, **kwargs)

    monkeypatch.setattr(quality, "run_fold", spy_fold)
    monkeypatch.setattr(quality, "tune_lightgbm", spy_tune)
    figures = quality.bench_section(tmp_path, quick=True, layouts=("dated",))

    result = figures["layouts"]["dated"]
    assert result["data"] == quality.SYNTHETIC and result["folds"] == quality.QUICK_FOLDS
    for fold in result["per_fold"]:
        for scores in (fold["rmse"], fold["rmse_plausible"]):
            assert set(scores) == set(quality.MODELS)
            assert all(math.isfinite(v) and v > 0 for v in scores.values())
        assert fold["ours_steps"] == quality.QUICK_TRAIN_STEPS
    assert math.isfinite(result["ratio"]) and result["ratio"] > 0

    layout = schema.get_layout("dated")
    assert len(seen["folds"]) == len(seen["tuned"]) == quality.QUICK_FOLDS
    held_out = []
    for (lines, train_index, test_index), tuned_x in zip(seen["folds"], seen["tuned"]):
        assert not set(train_index) & set(test_index)
        held_out += list(test_index)
        train_x, _, train_ok = baselines.load(quality.write_lines(tmp_path / "t.csv", lines, train_index), layout)
        test_x, _, _ = baselines.load(quality.write_lines(tmp_path / "h.csv", lines, test_index), layout)
        # LightGBM was tuned on the training folds' plausible rows, and on none of the held-out rows.
        assert np.array_equal(tuned_x, train_x[train_ok])
        assert not {row.tobytes() for row in tuned_x} & {row.tobytes() for row in test_x}
    assert sorted(held_out) == list(range(result["rows"]))

    rows = quality.report_rows(figures)
    assert len(rows) == 1 and "(quick)" in rows[0].measured and "LightGBM" in rows[0].compared
    assert "no verdict" in rows[0].verdict
    assert any(line.startswith("| dated |") for line in quality.report_details(figures))


def test_rows_give_mean_and_sd_and_the_verdict_on_the_ratio():
    def stats(ours, lgbm, rule):
        return {"ours": {"mean": ours, "std": 0.1}, "lightgbm": {"mean": lgbm, "std": 0.2}, "distance rule": rule}

    layout = {"rows": 9435, "folds": 5, "data": "course data", "seconds": 300.0, "ratio": 0.9}
    figures = {
        "quick": False,
        "seed": 0,
        "target_ratio": quality.TARGET_RATIO,
        "lightgbm_search": {
            "configs": 12,
            "space": quality.SEARCH_SPACE,
            "inner_fraction": 0.2,
            "early_stopping_rounds": 100,
            "max_trees": 3000,
        },
        "layouts": {
            "lab": {**layout, "rmse": stats(3.6, 4.0, {"mean": 6.0, "std": 1.0}), "meets_target": True},
            "dated": {
                **layout,
                "ratio": 0.99,
                "rmse": stats(3.96, 4.0, {"mean": 6.0, "std": 1.0}),
                "meets_target": False,
            },
        },
    }
    for entry in figures["layouts"].values():
        entry["rmse_plausible"] = entry["rmse"]
    lab, dated = quality.report_rows(figures)
    assert lab.measured == "RMSE over 9,435 rows: **3.600 ± 0.100**"
    assert lab.compared == "LightGBM tuned in the same run 4.000 ± 0.200 · distance rule 6.000 ± 1.000"
    assert lab.verdict.endswith(": met") and dated.verdict.endswith(": **not met**")
    assert "| lab | course data | 9,435 | 5 | 3.600 ± 0.100 | 4.000 ± 0.200 |" in "\n".join(
        quality.report_details(figures)
    )
