"""trainer.features and trainer.model: feature values, and train → export → reload → predict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from trainer import data, distribution, features, schema

JFK = (-73.7781, 40.6413)
TIMES_SQUARE = (-73.9855, 40.7580)
# Great-circle JFK → Times Square by hand: haversine with R = 6371.0088 km.
JFK_TIMES_SQUARE_KM = 21.7734


def _features(layout, **columns):
    inputs = {
        name: tf.constant(value, tf.string if name == layout.pickup_datetime else tf.float32)
        for name, value in columns.items()
    }
    out = features.TaxiFeatures(layout.name)(inputs)
    names = features.feature_names(layout)
    numeric = out["numeric"].numpy()
    assert numeric.shape == (len(next(iter(columns.values()))), len(names))
    return {name: numeric[:, i] for i, name in enumerate(names)}, out


def test_haversine_jfk_to_times_square():
    km = features.haversine_km(tf.constant(JFK[0]), tf.constant(JFK[1]), TIMES_SQUARE[0], TIMES_SQUARE[1])
    assert float(km) == pytest.approx(JFK_TIMES_SQUARE_KM, abs=0.01)


def test_lab_feature_values():
    f, out = _features(
        schema.LAB,
        pickuplon=[JFK[0], -73.99, -80.0],
        pickuplat=[JFK[1], 40.75, 10.0],
        dropofflon=[TIMES_SQUARE[0], -73.99, -73.99],
        dropofflat=[TIMES_SQUARE[1], 40.76, 40.75],
        passengers=[2, 1, 1],
    )
    assert f["distance_km"][0] == pytest.approx(JFK_TIMES_SQUARE_KM, abs=0.01)
    assert f["log_distance_km"][0] == pytest.approx(math.log1p(JFK_TIMES_SQUARE_KM), abs=1e-3)
    assert f["pickup_to_jfk_km"][0] == pytest.approx(0.0, abs=1e-3)
    assert f["dropoff_to_midtown_km"][0] == pytest.approx(0.0, abs=1e-3)
    assert f["dropoff_to_jfk_km"][0] == pytest.approx(JFK_TIMES_SQUARE_KM, abs=0.01)
    assert (f["pickup_at_jfk"][0], f["pickup_at_lga"][0], f["dropoff_at_jfk"][0]) == (1.0, 0.0, 0.0)
    assert f["passengers"].tolist() == [2.0, 1.0, 1.0]
    # Due north 0.01° of latitude = 1.1057 km; on Manhattan's grid (29°) that is cos+sin of 29°.
    assert f["north_km"][1] == pytest.approx(1.10574, abs=1e-3)
    assert f["east_km"][1] == pytest.approx(0.0, abs=1e-4)
    assert f["distance_km"][1] == pytest.approx(1.1119, abs=2e-3)
    theta = math.radians(29.0)
    assert f["grid_distance_km"][1] == pytest.approx(1.10574 * (math.cos(theta) + math.sin(theta)), abs=1e-3)
    assert (f["bearing_sin"][1], f["bearing_cos"][1]) == pytest.approx((1.0, 0.0), abs=1e-4)
    # Coordinates outside the city are clipped to the plausible box before anything else.
    assert f["pickup_lon"][2] == pytest.approx(schema.NYC_LON_RANGE[0])
    assert f["pickup_lat"][2] == pytest.approx(schema.NYC_LAT_RANGE[0])
    assert out["pickup_cell"].numpy()[0] != out["pickup_cell"].numpy()[1]
    assert out["pickup_cell"].numpy()[1] == out["dropoff_cell"].numpy()[2]


def test_new_jersey_features():
    # Hoboken → midtown crosses the Hudson; midtown → Upper East Side does not; a trip far
    # south (harbour) or north (beyond the traced river) is never called a crossing.
    f, _ = _features(
        schema.LAB,
        pickuplon=[-74.030, -73.985, -74.030, -74.10],
        pickuplat=[40.745, 40.758, 40.745, 41.00],
        dropofflon=[-73.985, -73.960, -74.035, -73.985],
        dropofflat=[40.758, 40.775, 40.735, 40.758],
        passengers=[1, 1, 1, 1],
    )
    river_lon = -74.020 + (-74.012 + 74.020) * (40.745 - 40.70) / 0.05
    expected_west = (river_lon + 74.030) * 111.320 * math.cos(math.radians(40.745))
    assert f["pickup_west_of_hudson_km"][0] == pytest.approx(expected_west, abs=2e-3)
    assert f["dropoff_west_of_hudson_km"][0] < 0
    assert f["crosses_hudson"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert f["pickup_west_of_hudson_km"][3] == 0.0


def test_dated_time_features():
    f, _ = _features(
        schema.DATED,
        pickup_datetime=["2011-01-28 20:42:59 UTC", "2012-09-04 17:30:00 UTC", "2009-01-01 00:00:00 UTC"],
        pickup_longitude=[-73.99, -73.99, -73.99],
        pickup_latitude=[40.75, 40.75, 40.75],
        dropoff_longitude=[-73.98, -73.98, -73.98],
        dropoff_latitude=[40.76, 40.76, 40.76],
        passenger_count=[1, 1, 1],
    )
    hour = 20 + 42 / 60
    assert f["hour_sin"][0] == pytest.approx(math.sin(2 * math.pi * hour / 24), abs=1e-4)
    assert f["hour_cos"][0] == pytest.approx(math.cos(2 * math.pi * hour / 24), abs=1e-4)
    # 2011-01-28 was a Friday (4), 2012-09-04 a Tuesday (1), 2009-01-01 a Thursday (3).
    for i, weekday in enumerate((4, 1, 3)):
        assert f["weekday_sin"][i] == pytest.approx(math.sin(2 * math.pi * weekday / 7), abs=1e-4)
    assert f["weekend"].tolist() == [0.0, 0.0, 0.0]
    assert f["night"].tolist() == [1.0, 0.0, 1.0]
    assert f["weekday_peak"].tolist() == [0.0, 1.0, 0.0]
    assert f["new_tariff"].tolist() == [0.0, 1.0, 0.0]
    assert f["years_since_2009"][2] == pytest.approx(0.0, abs=1e-4)
    assert f["years_since_2009"][0] == pytest.approx((730 + 27 + hour / 24) / 365.2425, abs=1e-4)


def test_winsorize_learns_the_training_range():
    layer = features.Winsorize(quantile=0.0)
    sample = np.array([[0.0, 10.0], [5.0, 20.0], [10.0, 30.0]], dtype="float32")
    layer.adapt(sample)
    out = layer(tf.constant([[-5.0, 25.0], [50.0, 0.0]])).numpy()
    assert out.tolist() == [[0.0, 25.0], [10.0, 10.0]]


def test_worker_role_from_tf_config():
    assert distribution.worker_role({}, {}) == (1, True)
    assert distribution.worker_role({"worker": ["a:1"]}, {"type": "worker", "index": 0}) == (1, True)
    two = {"worker": ["a:1", "b:2"]}
    assert distribution.worker_role(two, {"type": "worker", "index": 0}) == (2, True)
    assert distribution.worker_role(two, {"type": "worker", "index": 1}) == (2, False)
    with_chief = {"chief": ["c:0"], "worker": ["a:1"]}
    assert distribution.worker_role(with_chief, {"type": "chief", "index": 0}) == (2, True)
    assert distribution.worker_role(with_chief, {"type": "worker", "index": 0}) == (2, False)


def _check_round_trip(output_dir: Path, valid: Path, layout: schema.Layout):
    from trainer.predictor import Predictor, find_saved_model

    metrics = json.loads((output_dir / "eval_metrics.json").read_text())
    for key in ("rmse", "mae", "eval_rows", "train_rows", "train_rows_dropped", "rmse_plausible", "steps"):
        assert key in metrics, key
    assert metrics["layout"] == layout.name
    assert metrics["steps"] == 50
    assert set(metrics["train_rows_dropped"]) == set(schema.IMPLAUSIBLE_REASONS)
    assert metrics["eval_rows"] == sum(1 for line in valid.read_text().splitlines() if not line.startswith("fare"))

    export = find_saved_model(output_dir / "export" / "exporter")
    assert export.parent == output_dir / "export" / "exporter" and export.name.isdigit()
    meta = json.loads((export / "assets.extra" / "taxifare.json").read_text())
    assert meta["layout"] == layout.name
    assert meta["metrics"]["rmse"] == pytest.approx(metrics["rmse"])
    assert meta["fields"] == {n: "string" if n == layout.pickup_datetime else "float32" for n in layout.serving_fields}

    # The raw signature: one [None] input per serving field, output fare_amount [None].
    sig = tf.saved_model.load(str(export)).signatures["serving_default"]
    _, inputs = sig.structured_input_signature
    assert {n: (s.dtype.name, s.shape.as_list()) for n, s in inputs.items()} == {
        n: ("string" if n == layout.pickup_datetime else "float32", [None]) for n in layout.serving_fields
    }
    out = sig.structured_outputs
    assert list(out) == ["fare_amount"] and out["fare_amount"].shape.as_list() == [None]

    # Reloaded model reproduces the training job's evaluation on every row of the valid file.
    predictor = Predictor.load(output_dir)
    scan = data.scan_files([str(valid)])
    cols = data.read_columns(scan)
    instances = []
    for i in range(int(cols[schema.LABEL].shape[0])):
        inst = {}
        for name in layout.serving_fields:
            value = cols[name][i].numpy()
            inst[name] = value.decode() if isinstance(value, bytes) else float(value)
        instances.append(inst)
    fares = np.array(predictor.predict(instances))
    labels = cols[schema.LABEL].numpy()
    assert np.isfinite(fares).all()
    assert math.sqrt(np.mean((fares - labels) ** 2)) == pytest.approx(metrics["rmse"], rel=1e-3)
    # 50 steps already beat predicting nothing at all.
    assert metrics["rmse"] < math.sqrt(np.mean(labels**2))

    for part in ("train", "eval"):
        events = list((output_dir / "tensorboard" / part).glob("events.out.tfevents.*"))
        assert events, f"no TensorBoard events in tensorboard/{part}"


@pytest.mark.slow
def test_lab_round_trip(lab_model_dir, lab_csvs):
    _check_round_trip(lab_model_dir, lab_csvs[1], schema.LAB)


@pytest.mark.slow
def test_dated_round_trip(dated_model_dir, dated_csvs):
    _check_round_trip(dated_model_dir, dated_csvs[1], schema.DATED)


def test_tensorboard_has_train_and_eval_loss(lab_model_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for part in ("train", "eval"):
        acc = EventAccumulator(str(lab_model_dir / "tensorboard" / part))
        acc.Reload()
        tags = acc.Tags()["tensors"] + acc.Tags()["scalars"]
        assert "loss" in tags, (part, acc.Tags())
