"""trainer.synth: deterministic, realistic synthetic trips; its stated noise floor holds."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from trainer import schema, synth


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("layout", ["lab", "dated"])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, layout):
    a = synth.write_csv(tmp_path / "a.csv", 3000, layout=layout, seed=5)
    b = synth.write_csv(tmp_path / "b.csv", 3000, layout=layout, seed=5)
    c = synth.write_csv(tmp_path / "c.csv", 3000, layout=layout, seed=6)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


@pytest.mark.parametrize("layout", ["lab", "dated"])
def test_rows_parse_in_the_layout(tmp_path, layout):
    lay = schema.get_layout(layout)
    path = synth.write_csv(tmp_path / "t.csv", 2000, layout=layout, seed=1, header=True)
    lines = path.read_text().splitlines()
    assert len(lines) == 2001
    assert schema.detect_layout(lines[0]) == (lay, True)
    assert schema.detect_layout(lines[1]) == (lay, False)
    reasons = Counter(schema.check_row(line.split(","), lay)[0] for line in lines[1:])
    # No malformed rows; a small share of implausible ones of every kind, as in the course data.
    assert not set(reasons) & set(schema.MALFORMED_REASONS)
    dirty = sum(n for r, n in reasons.items() if r is not None)
    assert 0.005 * 2000 <= dirty <= 0.03 * 2000
    assert set(reasons) == {None, *schema.IMPLAUSIBLE_REASONS}
    keys = [int(line.rsplit(",", 1)[1]) for line in lines[1:]]
    assert keys == list(range(2000))


def test_clean_rows_when_dirty_fraction_is_zero(tmp_path):
    path = synth.write_csv(tmp_path / "clean.csv", 5000, layout="dated", seed=3, dirty_fraction=0.0)
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        assert schema.check_row(line.split(","), schema.DATED) == (None, ""), f"line {n}: {line}"


def test_places_are_where_taxi_trips_are():
    cols = synth.generate(50_000, "lab", seed=2, dirty_fraction=0.0)
    lon, lat = cols["pickuplon"], cols["pickuplat"]
    manhattan = synth._in_manhattan(lon, lat)
    assert 0.6 < manhattan.mean() < 0.9
    for airport, (a_lon, a_lat) in synth.AIRPORTS.items():
        near = synth.haversine_km(lon, lat, a_lon, a_lat) < 2.0
        assert near.mean() > 0.002, airport
    km = synth.haversine_km(lon, lat, cols["dropofflon"], cols["dropofflat"])
    assert 1.5 < np.median(km) < 5.0  # most trips are short hops
    fares = cols["fare_amount"]
    assert 8.0 < np.median(fares) < 15.0
    assert Counter(cols["passengers"].tolist()).most_common(1)[0][0] == 1


def test_meter_rules():
    midtown, jfk = (-73.9855, 40.7580), (-73.7781, 40.6413)
    before = int(datetime(2011, 3, 2, 11, 0, tzinfo=UTC).timestamp())  # a Wednesday
    after = int(datetime(2013, 3, 6, 11, 0, tzinfo=UTC).timestamp())  # a Wednesday
    assert synth.meter_fare(*midtown, *jfk, before) == pytest.approx(45.0)
    assert synth.meter_fare(*jfk, *midtown, after) == pytest.approx(52.0)
    # A 2 km crosstown hop: initial charge + distance + slow-traffic minutes.
    a, b = (-73.990, 40.750), (-73.967, 40.750)
    miles = float(synth.haversine_km(*a, *b)) * synth.DETOUR_FACTOR / synth.KM_PER_MILE
    slow = miles * 0.40 * 1.0 * 6.0  # daytime congestion, both ends in Manhattan
    assert synth.meter_fare(*a, *b, before) == pytest.approx(2.50 + 2.00 * miles + 0.40 * slow)
    assert synth.meter_fare(*a, *b, after) == pytest.approx(2.50 + 2.50 * miles + 0.50 * slow)
    night = before + 12 * 3600  # 23:00
    peak = before + 6 * 3600  # 17:00 on a weekday
    base_night = 2.50 + 2.00 * miles + 0.40 * miles * 0.15 * 6.0
    assert synth.meter_fare(*a, *b, night) == pytest.approx(base_night + 0.50)
    assert synth.meter_fare(*a, *b, peak) == pytest.approx(2.50 + 2.00 * miles + 0.40 * miles * 0.55 * 6.0 + 1.00)


def test_noise_rmse_matches_the_generated_noise():
    cols = synth.generate(200_000, "dated", seed=11, dirty_fraction=0.0)
    expected = (
        synth.meter_fare(
            cols["pickup_longitude"],
            cols["pickup_latitude"],
            cols["dropoff_longitude"],
            cols["dropoff_latitude"],
            cols["_epoch_seconds"],
        )
        + synth.NOISE_SCALE
    )
    residual = cols["fare_amount"] - expected
    # Coordinates are rounded to 6 decimals before writing: negligible next to the noise.
    assert abs(residual.mean()) < 0.03
    assert residual.std() == pytest.approx(synth.NOISE_RMSE, rel=0.02)
    assert pytest.approx(math.sqrt(2.0**2 + 0.01**2 / 12)) == synth.NOISE_RMSE


@pytest.mark.slow
def test_trained_model_gets_within_15_percent_of_the_noise_floor(tmp_path):
    """Train with default settings on clean dated trips; validation RMSE ≈ NOISE_RMSE."""
    from trainer import model

    train = synth.write_csv(tmp_path / "train.csv", 30_000, layout="dated", seed=21)
    valid = synth.write_csv(tmp_path / "valid.csv", 5_000, layout="dated", seed=22, dirty_fraction=0.0)
    metrics = model.train_and_evaluate(str(train), str(valid), tmp_path / "out")
    print(json.dumps({k: metrics[k] for k in ("rmse", "rmse_plausible", "train_seconds")}))
    assert metrics["eval_rows"] == metrics["eval_rows_plausible"] == 5000
    assert metrics["rmse"] >= synth.NOISE_RMSE * 0.97  # nothing beats the noise (sampling slack)
    assert metrics["rmse"] <= synth.NOISE_RMSE * 1.15
