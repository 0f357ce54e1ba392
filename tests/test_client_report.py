"""The client program's input handling and the HTML evaluation report."""

import json
import math

import numpy as np
import pytest

from trainer import client, report, schema


def test_haversine_jfk_to_times_square():
    # JFK terminal 4 (-73.7781, 40.6413) to Times Square (-73.9855, 40.7580): about 21.8 km.
    km = report.haversine_km([-73.7781], [40.6413], [-73.9855], [40.7580])[0]
    assert km == pytest.approx(21.77, abs=0.1)


def test_error_by_distance_bins():
    distance = np.array([0.5, 0.7, 4.0, 25.0])
    actual = np.array([5.0, 5.0, 15.0, 52.0])
    predicted = np.array([6.0, 4.0, 15.0, 50.0])
    rows = {r["distance"]: r for r in report.error_by_distance(distance, actual, predicted)}
    assert rows["0–1 km"]["trips"] == 2 and rows["0–1 km"]["rmse"] == pytest.approx(1.0)
    assert rows["3–5 km"]["rmse"] == 0.0
    assert rows["20–30 km"]["mean_error"] == pytest.approx(-2.0)


def test_evaluation_html_has_both_plots_and_metrics():
    rng = np.random.default_rng(0)
    actual = rng.uniform(3, 60, 200)
    page = report.evaluation_html(
        actual, actual + rng.normal(0, 2, 200), rng.uniform(0, 30, 200), metrics={"rmse": 2.0}
    )
    assert page.count("data:image/png;base64,") == 2
    assert "<td>rmse</td><td>2.0</td>" in page


def test_evaluation_html_rejects_mismatched_arrays():
    with pytest.raises(ValueError, match="equal, non-empty"):
        report.evaluation_html(np.ones(3), np.ones(2), np.ones(3))


def test_read_instances_json_lines_and_single_object(tmp_path):
    lines = tmp_path / "instances.json"
    lines.write_text(json.dumps(schema.LAB_TEST_INSTANCE) + "\n\n" + json.dumps(schema.LAB_TEST_INSTANCE) + "\n")
    assert len(client.read_instances_file(lines)) == 2
    pretty = tmp_path / "test.json"
    pretty.write_text(json.dumps(schema.LAB_TEST_INSTANCE, indent=2))
    assert client.read_instances_file(pretty) == [schema.LAB_TEST_INSTANCE]


@pytest.mark.parametrize(
    "text, message",
    [("", "empty"), ('{"a": 1}\nnot json\n', "line 2: not valid JSON"), ("[1, 2]\n", "line 1: expected a JSON object")],
)
def test_read_instances_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        client.read_instances_file(path)


def test_sample_validation_rows_strips_labels(lab_csvs):
    _, valid = lab_csvs
    sample = client.sample_validation_rows(valid, schema.LAB, size=50, seed=3)
    assert len(sample.instances) == len(sample.labels) == 50
    assert set(sample.instances[0]) == set(schema.LAB.serving_fields)
    again = client.sample_validation_rows(valid, schema.LAB, size=50, seed=3)
    assert again.instances == sample.instances


def test_rmse_ignores_unlabelled():
    assert client.rmse([1.0, 3.0, 100.0], [2.0, 2.0, None]) == pytest.approx(1.0)
    assert math.isnan(client.rmse([1.0], [None]))


def test_predict_reports_unreachable_endpoint():
    with pytest.raises(client.EndpointError, match="cannot be reached"):
        client.predict("http://127.0.0.1:9/predict", [schema.LAB_TEST_INSTANCE])
