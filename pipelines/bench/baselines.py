"""Reference models on the course files, fit in the same run as the trainer's model.

* training mean — predict the mean training fare;
* distance rule — the course's rule: mean fare / mean great-circle km × the trip's km;
* gradient-boosted trees — scikit-learn ``HistGradientBoostingRegressor`` on hand-made features
  (``features``: great-circle and Manhattan-grid distance, deltas, bearing, distances to the three
  airports and midtown, airport flags, passengers; for the dated layout hour, weekday, month, year,
  and the 2012-09-04 tariff change). The cross-validation section (``pipelines.bench.quality``)
  fits LightGBM on the same features and the distance rule through ``distance_rule``.

Fit on the plausible rows of ``taxi-train.csv`` (the rows the trainer learns from); evaluated on
every parseable row of ``taxi-valid.csv`` (what the trainer's ``rmse`` covers) and on its
plausible rows only.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from pipelines.bench.report import number
from trainer import schema

log = logging.getLogger(__name__)

EARTH_RADIUS_KM = 6371.0
PLACES = {
    "jfk": (-73.7781, 40.6413),
    "lga": (-73.8740, 40.7769),
    "ewr": (-74.1745, 40.6895),
    "midtown": (-73.9855, 40.7580),
}
AIRPORT_RADIUS_KM = 2.0
GRID_ANGLE = math.radians(29.0)  # Manhattan's avenues run ~29° east of true north
TARIFF_CHANGE = datetime(2012, 9, 4)


def read_rows(path: Path, layout: schema.Layout) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[str]]:
    """(columns, fares, plausible mask, pickup times) for every parseable row of a course CSV."""
    columns: dict[str, list[float]] = {name: [] for name in layout.numeric_fields}
    fares, plausible, times = [], [], []
    with open(path, newline="") as handle:
        for fields in csv.reader(handle):
            if not fields or schema.is_header(fields):
                continue
            reason, _ = schema.check_row(fields, layout)
            if reason in schema.MALFORMED_REASONS:
                continue  # not parseable: the trainer's evaluation skips it too
            row = dict(zip(layout.columns, fields))
            for name in layout.numeric_fields:
                columns[name].append(float(row[name]))
            fares.append(float(row[schema.LABEL]))
            plausible.append(reason is None)
            times.append(row.get(layout.pickup_datetime or "", ""))
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    return arrays, np.asarray(fares), np.asarray(plausible, dtype=bool), times


def haversine_km(lon1, lat1, lon2, lat2) -> np.ndarray:
    lon1, lat1, lon2, lat2 = map(np.radians, (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def load(path: Path, layout: schema.Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hand-made features, fares, plausible mask) of every parseable row of a CSV in `layout`."""
    columns, fares, plausible, times = read_rows(path, layout)
    return features(columns, layout, times), fares, plausible


def features(columns: dict[str, np.ndarray], layout: schema.Layout, times: list[str]) -> np.ndarray:
    plon, plat = columns[layout.pickup_lon], columns[layout.pickup_lat]
    dlon, dlat = columns[layout.dropoff_lon], columns[layout.dropoff_lat]
    east = (dlon - plon) * 111.32 * np.cos(np.radians(40.75))
    north = (dlat - plat) * 110.574
    along = east * math.sin(GRID_ANGLE) + north * math.cos(GRID_ANGLE)
    across = east * math.cos(GRID_ANGLE) - north * math.sin(GRID_ANGLE)
    out = [
        plon,
        plat,
        dlon,
        dlat,
        east,
        north,
        haversine_km(plon, plat, dlon, dlat),
        np.abs(along) + np.abs(across),
        np.arctan2(north, east),
        columns[layout.passengers],
    ]
    for lon, lat in PLACES.values():
        for end_lon, end_lat in ((plon, plat), (dlon, dlat)):
            km = haversine_km(end_lon, end_lat, lon, lat)
            out += [km, (km < AIRPORT_RADIUS_KM).astype(np.float64)]
    if layout.pickup_datetime:
        parsed = [schema.parse_datetime(t).replace(tzinfo=None) for t in times]
        out += [
            np.array([t.hour + t.minute / 60 for t in parsed]),
            np.array([t.weekday() for t in parsed], dtype=np.float64),
            np.array([t.month for t in parsed], dtype=np.float64),
            np.array([t.year + t.timetuple().tm_yday / 366 for t in parsed]),
            np.array([t >= TARIFF_CHANGE for t in parsed], dtype=np.float64),
        ]
    return np.column_stack(out)


DISTANCE_COLUMN = 6  # the great-circle km among ``features``' columns


def distance_rule(x_train: np.ndarray, y_train: np.ndarray) -> float:
    """The course's rule fit on training rows: dollars per great-circle km (mean fare / mean km)."""
    return float(y_train.mean()) / float(x_train[:, DISTANCE_COLUMN].mean())


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - truth) ** 2)))


def fit_and_score(train_path: Path, valid_path: Path, layout_name: str, seed: int = 0) -> dict:
    """RMSE of the three references on the validation file (all parseable rows / plausible rows)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    layout = schema.get_layout(layout_name)
    x_train, train_y, train_ok = load(train_path, layout)
    x_valid, valid_y, valid_ok = load(valid_path, layout)
    x_train, y_train = x_train[train_ok], train_y[train_ok]

    mean = float(y_train.mean())
    per_km = distance_rule(x_train, y_train)
    started = time.perf_counter()
    gbt = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.08, max_leaf_nodes=31, random_state=seed)
    gbt.fit(x_train, y_train)
    fit_seconds = time.perf_counter() - started
    predictions = {
        "training mean": np.full(len(valid_y), mean),
        "distance rule": x_valid[:, DISTANCE_COLUMN] * per_km,
        "gradient-boosted trees": gbt.predict(x_valid),
    }
    result = {
        "train_rows": int(train_ok.sum()),
        "eval_rows": int(len(valid_y)),
        "eval_rows_plausible": int(valid_ok.sum()),
        "rmse": {name: round(rmse(p, valid_y), 4) for name, p in predictions.items()},
        "rmse_plausible": {name: round(rmse(p[valid_ok], valid_y[valid_ok]), 4) for name, p in predictions.items()},
        "gbt_fit_seconds": round(fit_seconds, 2),
        "gbt_iterations": int(gbt.n_iter_),
        "distance_rule_fare_per_km": round(per_km, 4),
    }
    log.info("%s references: %s", layout_name, result["rmse"])
    return result


def report_cell(result: dict) -> str:
    """The references' RMSE on all validation rows, as the summary table's "compared with" cell."""
    rmse = result["rmse"]
    return (
        f"training mean {number(rmse['training mean'], 3)} · distance rule {number(rmse['distance rule'], 3)} · "
        f"GBT {number(rmse['gradient-boosted trees'], 3)} (same run)"
    )
