"""trainer.predictor against real trained exports (tests/fixtures/models.py)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import tensorflow as tf

from trainer import schema
from trainer.predictor import (
    InstanceError,
    ModelLoadError,
    ModelNotFoundError,
    Predictor,
    find_saved_model,
)


def _only_export(output_dir):
    versions = [p for p in (output_dir / "export" / "exporter").iterdir() if not p.name.startswith(".")]
    assert len(versions) == 1
    return versions[0]


@pytest.fixture(scope="module")
def lab(lab_model_dir) -> Predictor:
    return Predictor.load(lab_model_dir)


@pytest.fixture(scope="module")
def dated(dated_model_dir) -> Predictor:
    return Predictor.load(dated_model_dir)


def _trips(count: int, layout: schema.Layout, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    base = schema.TEST_INSTANCES[layout.name]
    trips = []
    for i in range(count):
        trip = dict(base)
        for name in (layout.pickup_lon, layout.dropoff_lon, layout.pickup_lat, layout.dropoff_lat):
            trip[name] = base[name] + float(rng.normal(0, 0.03))
        trip[layout.passengers] = int(rng.integers(1, 7))
        if layout.pickup_datetime:
            trip[layout.pickup_datetime] = f"201{i % 5}-0{1 + i % 9}-1{i % 10} {i % 24:02d}:3{i % 10}:00 UTC"
        trips.append(trip)
    return trips


# ----------------------------------------------------------------------------- finding the model
def test_find_saved_model_accepts_output_dir_exporter_and_saved_model(lab_model_dir):
    export = _only_export(lab_model_dir)
    assert find_saved_model(lab_model_dir) == export
    assert find_saved_model(lab_model_dir / "export" / "exporter") == export
    assert find_saved_model(export) == export


def test_find_saved_model_takes_the_newest_timestamp_and_ignores_unfinished(lab_model_dir, tmp_path):
    export = _only_export(lab_model_dir)
    exporter = tmp_path / "export" / "exporter"
    newer = exporter / str(int(export.name) + 100)
    shutil.copytree(export, exporter / export.name)
    shutil.copytree(export, newer)
    # An export still being written (hidden name) and a non-model folder are not candidates.
    shutil.copytree(export, exporter / f".{int(export.name) + 999}.tmp")
    (exporter / "99999999999").mkdir()
    assert find_saved_model(tmp_path) == newer
    assert find_saved_model(exporter) == newer
    assert Predictor.load(tmp_path, warm_up=False).version == newer.name


def test_find_saved_model_errors_name_the_directory(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        find_saved_model(tmp_path / "nowhere")
    (tmp_path / "export" / "exporter").mkdir(parents=True)
    with pytest.raises(ModelNotFoundError, match=f"no SavedModel in '{tmp_path}'"):
        find_saved_model(tmp_path)


def test_a_saved_model_without_serving_signature_is_refused(tmp_path):
    module = tf.Module()
    module.scale = tf.Variable(2.0)
    tf.saved_model.save(module, str(tmp_path / "plain"))
    with pytest.raises(ModelLoadError, match="no 'serving_default' signature"):
        Predictor.load(tmp_path / "plain")


# ----------------------------------------------------------------------------- describing it
def test_lab_model_fields_version_and_metadata(lab, lab_model_dir):
    assert lab.fields == {name: "float32" for name in schema.LAB.serving_fields}
    assert list(lab.fields) == list(schema.LAB.serving_fields)
    assert lab.layout == "lab"
    assert lab.version == _only_export(lab_model_dir).name
    described = lab.describe()
    assert described["signature"]["inputs"] == lab.fields
    assert described["signature"]["outputs"] == {"fare_amount": "float32"}
    assert described["metrics"]["rmse"] > 0
    assert lab.load_seconds > 0


def test_dated_model_fields(dated):
    expected = {name: "float32" for name in schema.DATED.serving_fields}
    expected["pickup_datetime"] = "string"
    assert dated.fields == expected
    assert dated.layout == "dated"


def test_layout_is_read_from_the_signature_when_the_metadata_file_is_missing(lab_model_dir, lab, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(_only_export(lab_model_dir), copy)
    (copy / "assets.extra" / "taxifare.json").unlink()
    bare = Predictor.load(copy)
    assert bare.layout == "lab"
    assert bare.fields == lab.fields
    assert bare.predict([schema.LAB_TEST_INSTANCE]) == lab.predict([schema.LAB_TEST_INSTANCE])


# ----------------------------------------------------------------------------- predicting
@pytest.mark.parametrize("layout", [schema.LAB, schema.DATED], ids=lambda layout: layout.name)
def test_predictions_equal_a_direct_signature_call_in_order(layout, lab, dated):
    predictor = lab if layout is schema.LAB else dated
    trips = _trips(37, layout)
    fares = predictor.predict(trips)
    assert len(fares) == 37 and all(isinstance(f, float) for f in fares)
    # Independently: the raw SavedModel signature, one instance at a time.
    loaded = tf.saved_model.load(str(predictor.path)).signatures["serving_default"]
    for trip, fare in zip(trips[:8], fares[:8]):
        inputs = {
            name: tf.constant([value], dtype=tf.string if name == "pickup_datetime" else tf.float32)
            for name, value in trip.items()
        }
        direct = float(loaded(**inputs)["fare_amount"].numpy()[0])
        assert math.isclose(direct, fare, rel_tol=1e-5, abs_tol=1e-4)
    # Order: the reversed batch gives the reversed answers.
    assert np.allclose(predictor.predict(trips[::-1]), fares[::-1], rtol=1e-5, atol=1e-4)
    assert all(0 < f < 500 for f in fares)


def test_the_lab_test_instance_gets_a_plausible_fare(lab):
    (fare,) = lab.predict([schema.LAB_TEST_INSTANCE])
    assert 3 < fare < 80


def test_empty_batch_predicts_nothing(lab):
    assert lab.predict([]) == []


def test_integers_and_floats_are_the_same_number(lab):
    as_float = dict(schema.LAB_TEST_INSTANCE, passengers=2.0)
    assert lab.predict([schema.LAB_TEST_INSTANCE]) == lab.predict([as_float])


def test_lenient_datetime_spellings_are_normalised(dated):
    canonical = dated.predict([schema.DATED_TEST_INSTANCE])
    for spelling in ("2011-1-28 20:42:59 UTC", " 2011-01-28 20:42:59 UTC "):
        assert dated.predict([dict(schema.DATED_TEST_INSTANCE, pickup_datetime=spelling)]) == canonical
    night = dated.predict([dict(schema.DATED_TEST_INSTANCE, pickup_datetime="2014-06-01 03:00:00 UTC")])
    assert night != canonical  # the time of day reaches the graph


LAB_BAD = [
    ("missing", lambda i: {k: v for k, v in i.items() if k != "passengers"}, "passengers", "missing field"),
    ("unknown", lambda i: {**i, "tip": 1.0}, "tip", "unknown field"),
    ("bool", lambda i: {**i, "passengers": True}, "passengers", "got a boolean"),
    ("string", lambda i: {**i, "pickuplat": "40.7"}, "pickuplat", "got a string"),
    ("null", lambda i: {**i, "pickuplat": None}, "pickuplat", "got null"),
    ("list", lambda i: {**i, "pickuplat": [40.7]}, "pickuplat", "got an array"),
    ("nan", lambda i: {**i, "dropofflon": float("nan")}, "dropofflon", "finite"),
    ("inf", lambda i: {**i, "dropofflon": float("inf")}, "dropofflon", "finite"),
    ("-inf", lambda i: {**i, "dropofflat": float("-inf")}, "dropofflat", "finite"),
    ("float32 overflow", lambda i: {**i, "dropofflat": 1e39}, "dropofflat", "float32 range"),
    ("huge int", lambda i: {**i, "passengers": 10**400}, "passengers", "float32 range"),
    ("not an object", lambda i: [1, 2, 3], None, "expected a JSON object"),
    ("string instance", lambda i: "pickuplon=1", None, "expected a JSON object"),
    ("null instance", lambda i: None, None, "expected a JSON object"),
]


@pytest.mark.parametrize("make_bad,field,message", [b[1:] for b in LAB_BAD], ids=[b[0] for b in LAB_BAD])
def test_bad_lab_instances_raise_instance_error_naming_index_and_field(lab, make_bad, field, message):
    good = schema.LAB_TEST_INSTANCE
    with pytest.raises(InstanceError, match=message) as caught:
        lab.predict([good, good, make_bad(dict(good)), good])
    assert caught.value.index == 2
    assert caught.value.field == field
    assert "instance 2" in str(caught.value)
    assert caught.value.to_dict() == {"error": str(caught.value), "index": 2, "field": field}


@pytest.mark.parametrize(
    "value,message",
    [
        ("yesterday", "is not a time like"),
        ("2011-13-28 20:42:59 UTC", "is not a time like"),
        ("2011-02-30 20:42:59 UTC", "is not a time like"),
        ("2011-01-28T20:42:59Z", "is not a time like"),
        ("", "is not a time like"),
        (1296247379, "expected a string like"),
    ],
)
def test_bad_pickup_datetime(dated, value, message):
    bad = dict(schema.DATED_TEST_INSTANCE, pickup_datetime=value)
    with pytest.raises(InstanceError, match=message) as caught:
        dated.predict([bad])
    assert (caught.value.index, caught.value.field) == (0, "pickup_datetime")


def test_a_lab_instance_sent_to_a_dated_model_names_the_missing_field(dated):
    with pytest.raises(InstanceError) as caught:
        dated.predict([schema.LAB_TEST_INSTANCE])
    assert caught.value.field == "pickup_datetime"


def test_instances_must_be_a_list(lab):
    with pytest.raises(TypeError, match="list of objects"):
        lab.predict(schema.LAB_TEST_INSTANCE)


def test_metadata_file_that_is_not_json_is_a_load_error(lab_model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(_only_export(lab_model_dir), copy)
    (copy / "assets.extra" / "taxifare.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable model metadata"):
        Predictor.load(copy)
    (copy / "assets.extra" / "taxifare.json").write_text(json.dumps(["lab"]))
    with pytest.raises(ModelLoadError, match="must be a JSON object"):
        Predictor.load(copy)
