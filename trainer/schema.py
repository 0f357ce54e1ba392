"""The two course CSV layouts, their serving fields, and the plausibility rules.

One module used by the trainer (tf.data parsing), the validator (row-by-row checks),
the synthetic generator and the server, so that all of them agree on names and ranges.

Layouts (no header in the course files; a header line is accepted and skipped):

* ``lab``   — 7 columns: fare_amount, pickuplon, pickuplat, dropofflon, dropofflat, passengers, key
* ``dated`` — 8 columns: fare_amount, pickup_datetime, pickup_longitude, pickup_latitude,
  dropoff_longitude, dropoff_latitude, passenger_count, key
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

LABEL = "fare_amount"
KEY = "key"

# Plausible ranges (inclusive unless said otherwise). Rows outside are dropped by the trainer
# and quarantined by the validator, with these reason names.
NYC_LON_RANGE = (-74.30, -72.90)
NYC_LAT_RANGE = (40.45, 41.00)
FARE_RANGE = (0.0, 500.0)  # fare must be > 0 and <= 500
PASSENGER_RANGE = (1, 6)
MIN_TRIP_DEGREES = 1e-4  # pickup and dropoff closer than this in both axes: a zero-length trip

# The share of one source's rows that goes to valid when ingest splits it by key (unless told otherwise).
VALID_FRACTION = 0.2

REASON_OUTSIDE_NYC = "outside_nyc"
REASON_FARE = "fare_out_of_range"
REASON_PASSENGERS = "passengers_out_of_range"
REASON_ZERO_TRIP = "zero_length_trip"
IMPLAUSIBLE_REASONS = (REASON_OUTSIDE_NYC, REASON_FARE, REASON_PASSENGERS, REASON_ZERO_TRIP)

# Malformed-row reasons (the trainer stops on these; the validator quarantines them).
REASON_COLUMNS = "wrong_column_count"
REASON_NOT_A_NUMBER = "not_a_number"
REASON_NON_FINITE = "non_finite"
REASON_BAD_DATETIME = "bad_datetime"
MALFORMED_REASONS = (REASON_COLUMNS, REASON_NOT_A_NUMBER, REASON_NON_FINITE, REASON_BAD_DATETIME)

# Lines that are not text rows at all (the validator quarantines them before check_row).
REASON_BINARY = "binary_data"  # not UTF-8, or control characters
REASON_BAD_HEADER = "bad_header"  # a header line whose names match no layout / the file's layout
LINE_REASONS = (REASON_BINARY, REASON_BAD_HEADER)

DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


@dataclass(frozen=True)
class Layout:
    """One CSV layout: its column names and which of them a serving instance carries."""

    name: str
    columns: tuple[str, ...]
    pickup_lon: str
    pickup_lat: str
    dropoff_lon: str
    dropoff_lat: str
    passengers: str
    pickup_datetime: str | None = None

    @property
    def serving_fields(self) -> tuple[str, ...]:
        """Raw fields of one serving instance, in CSV order (label and key excluded)."""
        return tuple(c for c in self.columns if c not in (LABEL, KEY))

    @property
    def numeric_fields(self) -> tuple[str, ...]:
        return tuple(c for c in self.serving_fields if c != self.pickup_datetime)


LAB = Layout(
    name="lab",
    columns=(LABEL, "pickuplon", "pickuplat", "dropofflon", "dropofflat", "passengers", KEY),
    pickup_lon="pickuplon",
    pickup_lat="pickuplat",
    dropoff_lon="dropofflon",
    dropoff_lat="dropofflat",
    passengers="passengers",
)

DATED = Layout(
    name="dated",
    columns=(
        LABEL,
        "pickup_datetime",
        "pickup_longitude",
        "pickup_latitude",
        "dropoff_longitude",
        "dropoff_latitude",
        "passenger_count",
        KEY,
    ),
    pickup_lon="pickup_longitude",
    pickup_lat="pickup_latitude",
    dropoff_lon="dropoff_longitude",
    dropoff_lat="dropoff_latitude",
    passengers="passenger_count",
    pickup_datetime="pickup_datetime",
)

LAYOUTS: dict[str, Layout] = {LAB.name: LAB, DATED.name: DATED}

# The lab's test.json instance.
LAB_TEST_INSTANCE = {
    "pickuplon": -73.885262,
    "pickuplat": 40.773008,
    "dropofflon": -73.987232,
    "dropofflat": 40.732403,
    "passengers": 2,
}
DATED_TEST_INSTANCE = {
    "pickup_datetime": "2011-01-28 20:42:59 UTC",
    "pickup_longitude": -73.885262,
    "pickup_latitude": 40.773008,
    "dropoff_longitude": -73.987232,
    "dropoff_latitude": 40.732403,
    "passenger_count": 2,
}
TEST_INSTANCES = {"lab": LAB_TEST_INSTANCE, "dated": DATED_TEST_INSTANCE}


class LayoutError(ValueError):
    """A file whose layout cannot be recognised."""


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise LayoutError(f"unknown layout {name!r}; expected one of {sorted(LAYOUTS)}") from None


def is_header(fields: list[str]) -> bool:
    """A header line names the label column first instead of holding a number."""
    return fields[0].strip().lower() == LABEL


def detect_layout(first_line: str, source: str = "<input>") -> tuple[Layout, bool]:
    """Return (layout, has_header) from a file's first line."""
    fields = first_line.rstrip("\r\n").split(",")
    header = is_header(fields)
    if header:
        names = tuple(f.strip() for f in fields)
        for layout in LAYOUTS.values():
            if names == layout.columns:
                return layout, True
        raise LayoutError(
            f"{source}: line 1: header {','.join(names)!r} matches no layout; expected "
            + " or ".join(repr(",".join(lay.columns)) for lay in LAYOUTS.values())
        )
    for layout in LAYOUTS.values():
        if len(fields) == len(layout.columns):
            return layout, False
    raise LayoutError(f"{source}: line 1: {len(fields)} columns; expected 7 (lab layout) or 8 (dated layout)")


def parse_datetime(text: str) -> datetime:
    """Parse the course's pickup time ('2011-01-28 20:42:59 UTC')."""
    return datetime.strptime(text.strip(), DATETIME_FORMAT).replace(tzinfo=UTC)


def check_row(fields: list[str], layout: Layout) -> tuple[str | None, str]:
    """Check one CSV row. Returns (reason, detail); reason is None for a good row.

    Malformed reasons come first (a row that does not parse), then implausible ones.
    """
    if len(fields) != len(layout.columns):
        return REASON_COLUMNS, f"{len(fields)} columns, expected {len(layout.columns)}"
    values: dict[str, float] = {}
    for name, text in zip(layout.columns, fields):
        if name == KEY:
            continue
        if name == layout.pickup_datetime:
            try:
                parse_datetime(text)
            except ValueError:
                return REASON_BAD_DATETIME, f"{name}={text!r} is not like '2011-01-28 20:42:59 UTC'"
            continue
        try:
            value = float(text)
        except ValueError:
            return REASON_NOT_A_NUMBER, f"{name}={text!r} is not a number"
        if not math.isfinite(value):
            return REASON_NON_FINITE, f"{name}={text!r} is not finite"
        values[name] = value
    return check_values(values, layout)


# -- the plausibility rules: one table, read by every check ----------------------------------------
# The row-by-row check (``check_values``), the vectorised checks over blocks of rows
# (``plausible``: numpy in the validator, TensorFlow in the trainer's input pipeline) and the SQL
# that BigQuery runs are all derived from ``RULES``; their order is the order reasons are reported.
LABEL_ROLE = "label"  # a rule field naming the label column; the other roles are Layout attributes


@dataclass(frozen=True)
class RangeRule:
    """Each named field must lie between ``low`` and ``high`` (inclusive; ``low`` excluded when
    ``low_open``). ``detail`` is formatted with ``field`` and ``value`` for the quarantine."""

    reason: str
    roles: tuple[str, ...]
    low: float
    high: float
    detail: str
    low_open: bool = False

    def fields(self, layout: Layout) -> tuple[str, ...]:
        return tuple(LABEL if role == LABEL_ROLE else getattr(layout, role) for role in self.roles)

    def holds_for(self, value):
        """Elementwise: a bool for a float, a mask for an array or a tensor."""
        above = (value > self.low) if self.low_open else (value >= self.low)
        return above & (value <= self.high)

    def holds(self, columns, layout: Layout):
        mask = None
        for name in self.fields(layout):
            if name in columns:
                holds = self.holds_for(columns[name])
                mask = holds if mask is None else mask & holds
        return True if mask is None else mask

    def first_break(self, values: dict[str, float], layout: Layout) -> str | None:
        for name in self.fields(layout):
            if name in values and not self.holds_for(values[name]):
                return self.detail.format(field=name, value=values[name])
        return None


@dataclass(frozen=True)
class ZeroTripRule:
    """Pickup and dropoff must differ by at least ``min_degrees`` in longitude or in latitude."""

    reason: str
    min_degrees: float
    detail: str

    def holds(self, columns, layout: Layout):
        same_lon = abs(columns[layout.pickup_lon] - columns[layout.dropoff_lon]) < self.min_degrees
        same_lat = abs(columns[layout.pickup_lat] - columns[layout.dropoff_lat]) < self.min_degrees
        return ~(same_lon & same_lat) if not isinstance(same_lon, bool) else not (same_lon and same_lat)

    def first_break(self, values: dict[str, float], layout: Layout) -> str | None:
        return None if self.holds(values, layout) else self.detail


RULES: tuple[RangeRule | ZeroTripRule, ...] = (
    RangeRule(
        REASON_OUTSIDE_NYC,
        ("pickup_lon", "dropoff_lon"),
        *NYC_LON_RANGE,
        detail="{field}={value} outside " + str(NYC_LON_RANGE),
    ),
    RangeRule(
        REASON_OUTSIDE_NYC,
        ("pickup_lat", "dropoff_lat"),
        *NYC_LAT_RANGE,
        detail="{field}={value} outside " + str(NYC_LAT_RANGE),
    ),
    RangeRule(REASON_FARE, (LABEL_ROLE,), *FARE_RANGE, detail="{field}={value} not in (0, 500]", low_open=True),
    RangeRule(REASON_PASSENGERS, ("passengers",), *PASSENGER_RANGE, detail="{field}={value} not in 1..6"),
    ZeroTripRule(REASON_ZERO_TRIP, MIN_TRIP_DEGREES, detail="pickup and dropoff are the same place"),
)


def check_values(values: dict[str, float], layout: Layout) -> tuple[str | None, str]:
    """Plausibility of parsed values (label optional, as in a serving instance): the first of
    ``RULES`` that a value breaks, as (reason, detail); (None, "") for a plausible row."""
    for rule in RULES:
        broken = rule.first_break(values, layout)
        if broken is not None:
            return rule.reason, broken
    return None, ""


def plausible(columns, layout: Layout):
    """Every rule of ``RULES`` at once over columns of numbers (numpy arrays or tensors): a mask."""
    mask = None
    for rule in RULES:
        holds = rule.holds(columns, layout)
        mask = holds if mask is None else mask & holds
    return mask
