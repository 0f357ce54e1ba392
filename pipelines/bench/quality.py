"""Model quality out of sample: k-fold cross-validation of the default model against tuned LightGBM.

``python -m pipelines.bench.quality --out build/bench`` (the ``cv`` section of ``taxifare bench``)
measures, per course layout, over the rows of ``taxi-train.csv`` and ``taxi-valid.csv`` together
(synthetic files when the course data is absent, see ``pipelines.bench.model.course_files``):

* the rows are split into ``FOLDS`` folds (shuffled, fixed by ``SEED``); each fold in turn is
  held out and the others are the training rows;
* **ours** — the trainer with its defaults (``trainer.model.train_and_evaluate``, the job behind
  ``python -m trainer.task``), trained on the training folds' CSV, evaluated on the held-out fold's;
* **LightGBM** — on the hand-made features of ``pipelines.bench.baselines``, tuned in this run on
  an inner split of the training folds only (a seeded random search over ``SEARCH_SPACE``, each
  configuration with early stopping on the inner split), refit with the best configuration and
  its best number of trees on all plausible training-fold rows, evaluated on the held-out fold;
* **distance rule** — the course's rule (``baselines.distance_rule``) fit on the training folds.

Every model learns from the plausible training-fold rows (the trainer drops the others itself) and
is scored on every parseable row of the held-out fold (what the trainer's ``rmse`` covers) and on
its plausible rows. The report gives each model's RMSE mean ± sample standard deviation over the
folds and the ratio ours / LightGBM of the mean RMSEs; target ≤ ``TARGET_RATIO`` on both layouts.

``quick`` runs the same machinery on a small sample: ``QUICK_FOLDS`` folds of ``QUICK_ROWS`` rows,
``QUICK_TRAIN_STEPS`` training steps and ``QUICK_CONFIGS`` LightGBM configurations.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipelines.bench import baselines
from pipelines.bench.model import LAYOUTS, SYNTHETIC, course_files
from pipelines.bench.report import Row, number
from trainer import hparams, schema

log = logging.getLogger("pipelines.bench.quality")

FOLDS = 5
SEED = 0
TARGET_RATIO = 0.95
MODELS = ("ours", "lightgbm", "distance rule")

# LightGBM's tuning: CONFIGS configurations drawn (seeded) from SEARCH_SPACE, each fit on the
# training folds less INNER_FRACTION of their rows and stopped early on that held-back part.
CONFIGS = 12
INNER_FRACTION = 0.2
MAX_TREES = 3000
EARLY_STOPPING_ROUNDS = 100
SEARCH_SPACE = {
    "num_leaves": (7, 15, 31, 63),
    "learning_rate": (0.01, 0.02, 0.05, 0.1),
    "min_child_samples": (5, 10, 20, 40, 80),
    "colsample_bytree": (0.6, 0.8, 1.0),
    "reg_lambda": (0.0, 1.0, 10.0),
}

QUICK_FOLDS = 2
QUICK_ROWS = 1200
QUICK_TRAIN_STEPS = 30
QUICK_CONFIGS = 2
QUICK_MAX_TREES = 200


# --------------------------------------------------------------------------------------------
# Rows and folds


def data_lines(path: Path) -> list[str]:
    """The non-empty, non-header lines of a CSV file."""
    return [line for line in path.read_text().splitlines() if line and not schema.is_header(line.split(","))]


def course_lines(layout: str, work: Path) -> tuple[list[str], str]:
    """Every data line of the layout's train and valid files, in that order, and where they came from."""
    train, valid, folder = course_files(layout, work)
    lines = data_lines(train) + data_lines(valid)
    source = f"course data ({folder / layout}: taxi-train.csv + taxi-valid.csv)" if folder else SYNTHETIC
    return lines, source


def folds(rows: int, k: int = FOLDS, seed: int = SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training row indices, held-out row indices) of each of `k` shuffled folds, fixed by `seed`."""
    from sklearn.model_selection import KFold

    return list(KFold(n_splits=k, shuffle=True, random_state=seed).split(np.arange(rows)))


def write_lines(path: Path, lines: list[str], index: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines[i] + "\n" for i in index))
    return path


# --------------------------------------------------------------------------------------------
# LightGBM, tuned on the training folds


def search_configs(count: int, seed: int = SEED) -> list[dict]:
    """`count` distinct configurations drawn from ``SEARCH_SPACE`` (seeded)."""
    rng = np.random.default_rng(seed)
    names = list(SEARCH_SPACE)
    grid_size = int(np.prod([len(SEARCH_SPACE[n]) for n in names]))
    picks = rng.choice(grid_size, size=min(count, grid_size), replace=False)
    configs = []
    for pick in picks:
        config, rest = {}, int(pick)
        for name in names:
            values = SEARCH_SPACE[name]
            config[name] = values[rest % len(values)]
            rest //= len(values)
        configs.append(config)
    return configs


def _lightgbm(config: dict, trees: int, seed: int):
    import lightgbm

    return lightgbm.LGBMRegressor(
        n_estimators=trees, random_state=seed, n_jobs=1, deterministic=True, verbose=-1, **config
    )


def tune_lightgbm(
    x: np.ndarray, y: np.ndarray, configs: int = CONFIGS, max_trees: int = MAX_TREES, seed: int = SEED
) -> dict:
    """The best of `configs` searched configurations, judged on an inner split of (x, y) alone:
    the configuration, its number of trees (early stopping) and every candidate's inner RMSE."""
    import lightgbm

    rng = np.random.default_rng(seed)
    inner = rng.random(len(y)) < INNER_FRACTION
    fit_x, fit_y, check_x, check_y = x[~inner], y[~inner], x[inner], y[inner]
    tried = []
    for config in search_configs(configs, seed):
        booster = _lightgbm(config, max_trees, seed)
        booster.fit(
            fit_x,
            fit_y,
            eval_X=(check_x,),
            eval_y=(check_y,),
            callbacks=[lightgbm.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
        )
        trees = int(booster.best_iteration_ or max_trees)
        score = baselines.rmse(booster.predict(check_x, num_iteration=trees), check_y)
        tried.append({"config": config, "trees": trees, "inner_rmse": round(score, 4)})
    best = min(tried, key=lambda t: t["inner_rmse"])
    return {**best, "inner_rows": int(inner.sum()), "tried": tried}


# --------------------------------------------------------------------------------------------
# One fold, one layout


def run_fold(
    lines: list[str], train_index: np.ndarray, test_index: np.ndarray, layout_name: str, work: Path, quick: bool
) -> dict:
    """RMSE of the three models on one held-out fold, every model fit on the other folds."""
    from trainer import model

    layout = schema.get_layout(layout_name)
    train_csv = write_lines(work / "train.csv", lines, train_index)
    test_csv = write_lines(work / "test.csv", lines, test_index)

    started = time.monotonic()
    options = {"layout": layout_name}
    if quick:
        options["train_steps"] = QUICK_TRAIN_STEPS
    ours = model.train_and_evaluate(str(train_csv), str(test_csv), work / "ours", **options)
    ours_seconds = time.monotonic() - started

    x_train, y_train, ok_train = baselines.load(train_csv, layout)
    x_test, y_test, ok_test = baselines.load(test_csv, layout)
    x_fit, y_fit = x_train[ok_train], y_train[ok_train]
    started = time.monotonic()
    tuned = tune_lightgbm(
        x_fit,
        y_fit,
        configs=QUICK_CONFIGS if quick else CONFIGS,
        max_trees=QUICK_MAX_TREES if quick else MAX_TREES,
    )
    booster = _lightgbm(tuned["config"], tuned["trees"], SEED).fit(x_fit, y_fit)
    lightgbm_seconds = time.monotonic() - started
    predictions = {
        "lightgbm": booster.predict(x_test),
        "distance rule": x_test[:, baselines.DISTANCE_COLUMN] * baselines.distance_rule(x_fit, y_fit),
    }
    if len(y_test) != ours["eval_rows"]:
        raise RuntimeError(
            f"fold rows differ: the trainer scored {ours['eval_rows']} rows, the references {len(y_test)}"
        )
    rmse = {"ours": ours["rmse"], **{m: baselines.rmse(p, y_test) for m, p in predictions.items()}}
    rmse_plausible = {
        "ours": ours["rmse_plausible"],
        **{m: baselines.rmse(p[ok_test], y_test[ok_test]) for m, p in predictions.items()},
    }
    return {
        "train_rows": len(train_index),
        "train_rows_plausible": int(ok_train.sum()),
        "test_rows": len(test_index),
        "eval_rows": int(len(y_test)),
        "eval_rows_plausible": int(ok_test.sum()),
        "rmse": {m: round(v, 4) for m, v in rmse.items()},
        "rmse_plausible": {m: round(v, 4) for m, v in rmse_plausible.items()},
        "ours_steps": ours["steps"],
        "ours_seconds": round(ours_seconds, 2),
        "lightgbm": {k: tuned[k] for k in ("config", "trees", "inner_rmse", "inner_rows")},
        "lightgbm_tried": tuned["tried"],
        "lightgbm_seconds": round(lightgbm_seconds, 2),
    }


def _summary(per_fold: list[dict], key: str) -> dict:
    out = {}
    for name in MODELS:
        values = np.array([f[key][name] for f in per_fold])
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[name] = {"mean": round(float(values.mean()), 4), "std": round(std, 4)}
    return out


def cross_validate(layout: str, work: Path, quick: bool = False) -> dict:
    lines, source = course_lines(layout, work)
    k = QUICK_FOLDS if quick else FOLDS
    if quick:
        lines = [lines[i] for i in np.random.default_rng(SEED).permutation(len(lines))[:QUICK_ROWS]]
    started = time.monotonic()
    per_fold = []
    for fold_number, (train_index, test_index) in enumerate(folds(len(lines), k)):
        fold = run_fold(lines, train_index, test_index, layout, work / f"{layout}-fold{fold_number}", quick)
        log.info("%s fold %d/%d: RMSE %s", layout, fold_number + 1, k, fold["rmse"])
        per_fold.append(fold)
    summary = _summary(per_fold, "rmse")
    ratio = summary["ours"]["mean"] / summary["lightgbm"]["mean"]
    return {
        "layout": layout,
        "data": source,
        "rows": len(lines),
        "folds": k,
        "rmse": summary,
        "rmse_plausible": _summary(per_fold, "rmse_plausible"),
        "ratio": round(ratio, 4),
        "fold_ratios": [round(f["rmse"]["ours"] / f["rmse"]["lightgbm"], 4) for f in per_fold],
        "meets_target": ratio <= TARGET_RATIO,
        "per_fold": per_fold,
        "seconds": round(time.monotonic() - started, 1),
    }


def _trainer_options(settings: dict) -> dict:
    """Trainer keyword arguments from hyperparameters by name (checked by their rule) or the trainer's
    other settings (loss, dropout, l2) as they are."""
    options = {}
    for name, value in settings.items():
        h = hparams.BY_NAME.get(name)
        options[h.flag if h else name] = h.check(value) if h else value
    return options


def score_settings(layout: str, work: Path, settings: dict, k: int = 3) -> dict:
    """How the trainer's defaults are chosen: mean RMSE of ours with `settings` over `k` folds of
    the layout's ``taxi-train.csv`` alone (never its validation file, never the folds above)."""
    from trainer import model

    options = _trainer_options(settings)
    train, _, _ = course_files(layout, work)
    lines = data_lines(train)
    scores = []
    for fold_number, (train_index, test_index) in enumerate(folds(len(lines), k)):
        fold_dir = work / f"settings-{layout}-fold{fold_number}"
        metrics = model.train_and_evaluate(
            str(write_lines(fold_dir / "train.csv", lines, train_index)),
            str(write_lines(fold_dir / "test.csv", lines, test_index)),
            fold_dir / "ours",
            layout=layout,
            **options,
        )
        scores.append(metrics["rmse"])
    values = np.array(scores)
    return {"layout": layout, "settings": settings, "mean": round(float(values.mean()), 4), "folds": scores}


def bench_section(work: Path, quick: bool = False, layouts: tuple[str, ...] = LAYOUTS) -> dict:
    """The ``cv`` section of ``taxifare bench``: each layout's cross-validation, and the settings."""
    started = time.monotonic()
    results = {layout: cross_validate(layout, work / "cv", quick) for layout in layouts}
    return {
        "layouts": results,
        "quick": quick,
        "seed": SEED,
        "target_ratio": TARGET_RATIO,
        "ours_defaults": {h.name: h.default for h in hparams.HPARAMS},
        "lightgbm_search": {
            "configs": QUICK_CONFIGS if quick else CONFIGS,
            "space": SEARCH_SPACE,
            "inner_fraction": INNER_FRACTION,
            "early_stopping_rounds": EARLY_STOPPING_ROUNDS,
            "max_trees": QUICK_MAX_TREES if quick else MAX_TREES,
        },
        "seconds": round(time.monotonic() - started, 1),
    }


# --------------------------------------------------------------------------------------------
# Report


def _cell(stats: dict) -> str:
    return f"{number(stats['mean'], 3)} ± {number(stats['std'], 3)}"


def report_rows(figures: dict) -> list[Row]:
    """The summary-table rows: per layout, ours against tuned LightGBM by cross-validation."""
    rows = []
    quick = " (quick)" if figures.get("quick") else ""
    for layout, r in figures["layouts"].items():
        rmse = r["rmse"]
        if figures.get("quick"):
            verdict = "no verdict on a quick run"
        else:
            verdict = "met" if r["meets_target"] else "**not met**"
        rows.append(
            Row(
                f"Model quality, {layout}, {r['folds']}-fold CV",
                f"RMSE{quick} over {r['rows']:,} rows: **{_cell(rmse['ours'])}**",
                f"LightGBM tuned in the same run {_cell(rmse['lightgbm'])} · "
                f"distance rule {_cell(rmse['distance rule'])}",
                f"ours / LightGBM **{r['ratio']:.2f}×** (target ≤ {figures['target_ratio']}×): {verdict}",
            )
        )
    return rows


def report_details(figures: dict) -> list[str]:
    lines = [
        "## Model quality by cross-validation (RMSE mean ± sd over the folds)",
        "",
        "| layout | data | rows | folds | ours | LightGBM (tuned) | distance rule | ours / LightGBM | "
        "ours, plausible rows | LightGBM, plausible rows | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for layout, r in figures["layouts"].items():
        rmse, plausible = r["rmse"], r["rmse_plausible"]
        lines.append(
            f"| {layout} | {r['data']} | {r['rows']:,} | {r['folds']} | {_cell(rmse['ours'])} "
            f"| {_cell(rmse['lightgbm'])} | {_cell(rmse['distance rule'])} | {r['ratio']:.3f} "
            f"| {_cell(plausible['ours'])} | {_cell(plausible['lightgbm'])} | {number(r['seconds'], 1)} |"
        )
    search = figures["lightgbm_search"]
    lines += [
        "",
        f"Folds shuffled with seed {figures['seed']}; each model scored on every parseable row of the "
        f"held-out fold. LightGBM: {search['configs']} configurations drawn from "
        f"{', '.join(search['space'])}, each stopped early ({search['early_stopping_rounds']} rounds, at most "
        f"{search['max_trees']} trees) on {search['inner_fraction']:.0%} of the training folds, the best refit "
        "on all training-fold rows.",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipelines.bench.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench"))
    parser.add_argument("--quick", action="store_true", help="a small sample: the machinery, not the figures")
    parser.add_argument("--layout", choices=LAYOUTS, action="append", help="one layout (repeatable); default both")
    parser.add_argument(
        "--score-settings",
        metavar="JSON",
        help="instead: score ours with these trainer settings (e.g. '{\"embedding_dim\": 8}') by 3-fold CV "
        "of taxi-train.csv alone — how the defaults are chosen",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.score_settings is not None:
        settings = json.loads(args.score_settings)
        with tempfile.TemporaryDirectory(prefix="taxifare-bench-cv-") as tmp:
            scores = [score_settings(layout, Path(tmp), settings) for layout in args.layout or LAYOUTS]
        print(json.dumps(scores))
        return 0
    with tempfile.TemporaryDirectory(prefix="taxifare-bench-cv-") as tmp:
        figures = bench_section(Path(tmp), args.quick, tuple(args.layout or LAYOUTS))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cv.json").write_text(json.dumps(figures, indent=2) + "\n")
    text = "\n".join(report_details(figures))
    (args.out / "cv.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
