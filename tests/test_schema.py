"""trainer.schema: layout detection and the row checks every area relies on."""

from __future__ import annotations

import pytest

from trainer import schema

LAB_ROW = "12.0,-73.987625,40.750617,-73.971163,40.78518,1,0"
DATED_ROW = "11.3,2011-01-28 20:42:59 UTC,-73.999022,40.739146,-73.990369,40.717866,1,0"


@pytest.mark.parametrize(
    ("line", "layout", "header"),
    [
        (LAB_ROW, schema.LAB, False),
        (DATED_ROW, schema.DATED, False),
        (",".join(schema.LAB.columns), schema.LAB, True),
        (",".join(schema.DATED.columns) + "\r\n", schema.DATED, True),
    ],
)
def test_detect_layout(line, layout, header):
    assert schema.detect_layout(line) == (layout, header)


def test_detect_layout_rejects_unknown_shapes():
    with pytest.raises(schema.LayoutError, match=r"f\.csv: line 1: 3 columns; expected 7 .* or 8"):
        schema.detect_layout("1,2,3", source="f.csv")
    with pytest.raises(schema.LayoutError, match="matches no layout"):
        schema.detect_layout("fare_amount,a,b,c,d,e,f", source="f.csv")


def test_serving_fields():
    assert schema.LAB.serving_fields == ("pickuplon", "pickuplat", "dropofflon", "dropofflat", "passengers")
    assert schema.DATED.serving_fields[0] == "pickup_datetime"
    assert schema.DATED.numeric_fields == (
        "pickup_longitude",
        "pickup_latitude",
        "dropoff_longitude",
        "dropoff_latitude",
        "passenger_count",
    )
    assert set(schema.LAB_TEST_INSTANCE) == set(schema.LAB.serving_fields)
    assert set(schema.DATED_TEST_INSTANCE) == set(schema.DATED.serving_fields)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (LAB_ROW, None),
        ("12.0,-73.98,40.75,-73.97,40.78,1", schema.REASON_COLUMNS),
        ("12.0,-73.98,forty,-73.97,40.78,1,0", schema.REASON_NOT_A_NUMBER),
        ("nan,-73.98,40.75,-73.97,40.78,1,0", schema.REASON_NON_FINITE),
        ("12.0,0.0,0.0,-73.97,40.78,1,0", schema.REASON_OUTSIDE_NYC),
        ("12.0,-73.98,41.2,-73.97,40.78,1,0", schema.REASON_OUTSIDE_NYC),
        ("0,-73.98,40.75,-73.97,40.78,1,0", schema.REASON_FARE),
        ("500.01,-73.98,40.75,-73.97,40.78,1,0", schema.REASON_FARE),
        ("500,-73.98,40.75,-73.97,40.78,1,0", None),
        ("12.0,-73.98,40.75,-73.97,40.78,0,0", schema.REASON_PASSENGERS),
        ("12.0,-73.98,40.75,-73.97,40.78,7,0", schema.REASON_PASSENGERS),
        ("12.0,-73.98,40.75,-73.98,40.75,1,0", schema.REASON_ZERO_TRIP),
        ("12.0,-73.98,40.75,-73.98005,40.75005,1,0", schema.REASON_ZERO_TRIP),
        ("12.0,-73.98,40.75,-73.98,40.7502,1,0", None),
    ],
)
def test_check_row_lab(row, reason):
    assert schema.check_row(row.split(","), schema.LAB)[0] == reason


def test_check_row_dated_datetime():
    assert schema.check_row(DATED_ROW.split(","), schema.DATED) == (None, "")
    bad = DATED_ROW.replace("2011-01-28 20:42:59 UTC", "28/01/2011 20:42")
    reason, detail = schema.check_row(bad.split(","), schema.DATED)
    assert reason == schema.REASON_BAD_DATETIME
    assert "pickup_datetime" in detail and "28/01/2011" in detail


def test_parse_datetime_is_utc():
    when = schema.parse_datetime("2011-01-28 20:42:59 UTC")
    assert (when.year, when.month, when.day, when.hour, when.minute, when.second) == (2011, 1, 28, 20, 42, 59)
    assert when.utcoffset().total_seconds() == 0
