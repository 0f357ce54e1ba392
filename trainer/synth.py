"""Synthetic NYC taxi trips in both course layouts (the project's embedded default data).

Trips start and end where real yellow-cab trips do: mostly Manhattan (midtown, downtown, the
Upper East and West Sides, the Village), the airports (JFK, LaGuardia, Newark) and the nearer
parts of Brooklyn, Queens and the Bronx. Most trips are short hops near the pickup.

Fares follow the NYC taxi meter:

* initial charge $2.50, then a distance charge per mile of road — $2.00 (40c per 1/5 mile)
  until 2012-09-04, $2.50 (50c per 1/5 mile) afterwards; road distance is the great-circle
  distance times a detour factor of 1.3;
* a slow-traffic charge per minute spent below 12 mph (40c / 50c per minute), whose minutes
  follow the time of day and the borough (Manhattan daytime traffic is slowest);
* a night surcharge of $0.50 (20:00–06:00) and a weekday peak surcharge of $1.00 (16:00–20:00);
* the JFK ↔ Manhattan flat fare ($45, $52 from 2012-09-04) instead of the meter, and the
  Newark surcharge ($15, $17.50 from 2012-09-04) on trips to EWR;
* plus unforeseeable waiting and traffic charges: an exponential amount with a scale of
  ``NOISE_SCALE`` dollars, the same for every trip and independent of everything observable.
  Its mean is a constant the model learns; its spread is the irreducible error.

``NOISE_RMSE`` is that irreducible error: the standard deviation of the exponential charge
(equal to its scale, 2.00) combined with rounding fares to cents (uniform, sd 0.01/sqrt(12)):
sqrt(2.00² + 0.01²/12) ≈ 2.000. It is the best RMSE any model can reach on clean rows of the
**dated** layout, where every fare determinant (places, pickup time, tariff date) is an input.
The **lab** layout hides the pickup time, so surcharges, time-of-day traffic and the 2012 tariff
change add to its floor.

A small share of rows (``DIRTY_FRACTION``, 1.5 %) is dirty the way the course's data is:
zero-length trips, coordinates at (0, 0), zero or negative fares, a passenger count of 0.
Everything is deterministic for a given ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from trainer import schema

NOISE_SCALE = 2.00  # dollars; scale (= sd) of the exponential waiting/traffic charge
CENT_ROUNDING_SD = 0.01 / math.sqrt(12.0)
NOISE_RMSE = math.sqrt(NOISE_SCALE**2 + CENT_ROUNDING_SD**2)
DIRTY_FRACTION = 0.015

DETOUR_FACTOR = 1.3
KM_PER_MILE = 1.609344
EARTH_RADIUS_KM = 6371.0088

# (name, lon, lat, sd in degrees, weight): where trips start and end.
CLUSTERS = (
    ("midtown", -73.982, 40.758, 0.012, 0.30),
    ("downtown", -74.008, 40.713, 0.008, 0.09),
    ("upper_east", -73.958, 40.775, 0.010, 0.12),
    ("upper_west", -73.975, 40.787, 0.010, 0.08),
    ("village_chelsea", -73.998, 40.737, 0.008, 0.14),
    ("harlem", -73.945, 40.810, 0.012, 0.03),
    ("brooklyn", -73.960, 40.690, 0.020, 0.05),
    ("queens", -73.925, 40.755, 0.015, 0.03),
    ("bronx", -73.900, 40.840, 0.020, 0.01),
    ("jfk", -73.785, 40.645, 0.004, 0.07),
    ("lga", -73.872, 40.774, 0.003, 0.075),
    ("ewr", -74.175, 40.690, 0.004, 0.005),
)
MANHATTAN_CLUSTERS = {"midtown", "downtown", "upper_east", "upper_west", "village_chelsea", "harlem"}
AIRPORTS = {"jfk": (-73.785, 40.645), "lga": (-73.872, 40.774), "ewr": (-74.175, 40.690)}
AIRPORT_RADIUS_KM = 2.0

LOCAL_TRIP_SHARE = 0.55  # trips whose dropoff is a short hop from the pickup
LOCAL_TRIP_SD = 0.012  # degrees

# Passenger counts 1..6 as in NYC trip records.
PASSENGER_PROBS = (0.70, 0.14, 0.04, 0.02, 0.07, 0.03)
# Relative trip counts per hour of day (quiet before dawn, busy evenings).
HOUR_WEIGHTS = (
    4.0,
    3.0,
    2.2,
    1.6,
    1.2,
    1.0,
    1.8,
    3.2,
    4.2,
    4.4,
    4.2,
    4.4,
    4.7,
    4.7,
    4.9,
    4.8,
    4.3,
    5.0,
    6.0,
    6.3,
    5.9,
    5.8,
    5.6,
    4.9,
)
FIRST_DAY = datetime(2009, 1, 1, tzinfo=UTC)
LAST_DAY = datetime(2015, 6, 30, tzinfo=UTC)
TARIFF_CHANGE = datetime(2012, 9, 4, tzinfo=UTC)


def haversine_km(lon1, lat1, lon2, lat2):
    """Great-circle distance in km (numpy arrays or floats)."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _near(lon, lat, place, radius_km=AIRPORT_RADIUS_KM):
    return haversine_km(lon, lat, place[0], place[1]) < radius_km


def _in_manhattan(lon, lat):
    # A slanted box along the island: good enough to decide flat fares and traffic.
    along = (lat - 40.700) * 0.94 + (lon + 74.020) * 0.34
    across = (lon + 74.020) * 0.94 - (lat - 40.700) * 0.34
    return (along > 0.0) & (along < 0.16) & (across > -0.005) & (across < 0.045 + along * 0.12)


def meter_fare(pickup_lon, pickup_lat, dropoff_lon, dropoff_lat, epoch_seconds):
    """Expected fare (dollars) of trips, before the waiting-charge noise; numpy arrays in and out.

    This is the conditional mean of the generated fare minus the constant noise mean, i.e. what a
    perfect model of the dated layout predicts (plus ``NOISE_SCALE``).
    """
    pickup_lon, pickup_lat, dropoff_lon, dropoff_lat = (
        np.asarray(v, dtype=np.float64) for v in (pickup_lon, pickup_lat, dropoff_lon, dropoff_lat)
    )
    epoch_seconds = np.asarray(epoch_seconds, dtype=np.int64)
    new_tariff = epoch_seconds >= int(TARIFF_CHANGE.timestamp())
    hour = (epoch_seconds // 3600) % 24
    weekday = ((epoch_seconds // 86400) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    miles = haversine_km(pickup_lon, pickup_lat, dropoff_lon, dropoff_lat) * DETOUR_FACTOR / KM_PER_MILE

    manhattan_share = 0.5 * (
        _in_manhattan(pickup_lon, pickup_lat).astype(float) + _in_manhattan(dropoff_lon, dropoff_lat)
    )
    # Share of the trip's distance crawled below 12 mph, minutes per mile when crawling.
    rush = ((hour >= 7) & (hour < 10)) | ((hour >= 16) & (hour < 20))
    day = (hour >= 10) & (hour < 16)
    congestion = np.where(rush, 0.55, np.where(day, 0.40, 0.15)) * (0.45 + 0.55 * manhattan_share)
    slow_minutes = miles * congestion * 6.0

    per_mile = np.where(new_tariff, 2.50, 2.00)
    per_slow_minute = np.where(new_tariff, 0.50, 0.40)
    fare = 2.50 + per_mile * miles + per_slow_minute * slow_minutes
    fare += np.where((hour >= 20) | (hour < 6), 0.50, 0.0)
    fare += np.where((weekday < 5) & (hour >= 16) & (hour < 20), 1.00, 0.0)

    jfk = _near(pickup_lon, pickup_lat, AIRPORTS["jfk"]) | _near(dropoff_lon, dropoff_lat, AIRPORTS["jfk"])
    manhattan_end = _in_manhattan(pickup_lon, pickup_lat) | _in_manhattan(dropoff_lon, dropoff_lat)
    fare = np.where(jfk & manhattan_end, np.where(new_tariff, 52.0, 45.0), fare)
    to_ewr = _near(dropoff_lon, dropoff_lat, AIRPORTS["ewr"])
    fare += np.where(to_ewr, np.where(new_tariff, 17.50, 15.00), 0.0)
    return fare


def _sample_places(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    weights = np.array([c[4] for c in CLUSTERS])
    idx = rng.choice(len(CLUSTERS), size=n, p=weights / weights.sum())
    centres = np.array([[c[1], c[2], c[3]] for c in CLUSTERS])[idx]
    lon = centres[:, 0] + rng.normal(0.0, 1.0, n) * centres[:, 2] * 1.3  # lon degrees are shorter
    lat = centres[:, 1] + rng.normal(0.0, 1.0, n) * centres[:, 2]
    return lon, lat


def _inside(lon, lat):
    # Keep generated (clean) trips well inside the plausible NYC box.
    return (
        (lon > schema.NYC_LON_RANGE[0] + 0.05)
        & (lon < schema.NYC_LON_RANGE[1] - 0.05)
        & (lat > schema.NYC_LAT_RANGE[0] + 0.05)
        & (lat < schema.NYC_LAT_RANGE[1] - 0.05)
    )


def generate(
    rows: int,
    layout: str = "lab",
    seed: int | tuple[int, ...] = 0,
    dirty_fraction: float = DIRTY_FRACTION,
) -> dict[str, np.ndarray]:
    """Generate ``rows`` trips as numpy columns named by the layout's CSV columns.

    Also returns ``"_epoch_seconds"`` (the pickup time, hidden in the lab layout) and
    ``"_dirty"`` (which rows were made dirty).
    """
    lay = schema.get_layout(layout)
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if not 0.0 <= dirty_fraction <= 1.0:
        raise ValueError(f"dirty_fraction must be in [0, 1], got {dirty_fraction}")
    rng = np.random.default_rng(seed)

    plon, plat = _sample_places(rng, rows)
    dlon, dlat = _sample_places(rng, rows)
    local = rng.random(rows) < LOCAL_TRIP_SHARE
    dlon = np.where(local, plon + rng.normal(0.0, LOCAL_TRIP_SD * 1.3, rows), dlon)
    dlat = np.where(local, plat + rng.normal(0.0, LOCAL_TRIP_SD, rows), dlat)
    # Resample places that fall outside the box or make zero-length trips, until all are clean.
    while True:
        bad = ~(_inside(plon, plat) & _inside(dlon, dlat)) | (haversine_km(plon, plat, dlon, dlat) < 0.05)
        if not bad.any():
            break
        k = int(bad.sum())
        plon[bad], plat[bad] = _sample_places(rng, k)
        dlon[bad], dlat[bad] = _sample_places(rng, k)

    first, last = int(FIRST_DAY.timestamp()), int(LAST_DAY.timestamp())
    days = rng.integers(0, (last - first) // 86400, rows)
    hour_p = np.array(HOUR_WEIGHTS) / sum(HOUR_WEIGHTS)
    hours = rng.choice(24, size=rows, p=hour_p)
    seconds = rng.integers(0, 3600, rows)
    epoch = first + days * 86400 + hours * 3600 + seconds

    noise = rng.exponential(NOISE_SCALE, rows)
    fare = np.round(meter_fare(plon, plat, dlon, dlat, epoch) + noise, 2)
    passengers = rng.choice(np.arange(1, 7), size=rows, p=PASSENGER_PROBS)

    dirty = rng.random(rows) < dirty_fraction
    kind = rng.integers(0, 4, rows)
    zero_trip = dirty & (kind == 0)
    dlon = np.where(zero_trip, plon, dlon)
    dlat = np.where(zero_trip, plat, dlat)
    at_zero = dirty & (kind == 1)
    plon = np.where(at_zero, 0.0, plon)
    plat = np.where(at_zero, 0.0, plat)
    bad_fare = dirty & (kind == 2)
    fare = np.where(bad_fare, -np.round(rng.random(rows) * 10, 1), fare)
    no_passengers = dirty & (kind == 3)
    passengers = np.where(no_passengers, 0, passengers)

    columns: dict[str, np.ndarray] = {
        schema.LABEL: fare,
        lay.pickup_lon: np.round(plon, 6),
        lay.pickup_lat: np.round(plat, 6),
        lay.dropoff_lon: np.round(dlon, 6),
        lay.dropoff_lat: np.round(dlat, 6),
        lay.passengers: passengers,
        schema.KEY: np.arange(rows),
    }
    if lay.pickup_datetime:
        columns[lay.pickup_datetime] = epoch.astype("datetime64[s]")
    columns["_epoch_seconds"] = epoch
    columns["_dirty"] = dirty
    return columns


def _format_column(name: str, values: np.ndarray, lay: schema.Layout) -> list[str]:
    if name == lay.pickup_datetime:
        return [str(v).replace("T", " ") + " UTC" for v in values]
    if name in (lay.passengers, schema.KEY):
        return [str(int(v)) for v in values]
    return [repr(round(float(v), 6)) for v in values]


def iter_rows(
    rows: int, layout: str = "lab", seed: int = 0, dirty_fraction: float = DIRTY_FRACTION
) -> Iterator[list[str]]:
    """CSV rows (lists of field strings, in the layout's column order)."""
    lay = schema.get_layout(layout)
    chunk = 200_000
    for start in range(0, rows, chunk):
        # Each chunk has its own seed sequence so a file of any size streams in bounded memory.
        n = min(chunk, rows - start)
        cols = generate(n, layout, seed=(seed, start // chunk), dirty_fraction=dirty_fraction)
        cols[schema.KEY] = cols[schema.KEY] + start
        texts = [_format_column(c, cols[c], lay) for c in lay.columns]
        yield from (list(r) for r in zip(*texts))


def write_csv(
    path: str | Path,
    rows: int,
    layout: str = "lab",
    seed: int = 0,
    header: bool = False,
    dirty_fraction: float = DIRTY_FRACTION,
) -> Path:
    """Write ``rows`` synthetic trips to ``path`` in ``layout`` ("lab" or "dated")."""
    lay = schema.get_layout(layout)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as out:
        if header:
            out.write(",".join(lay.columns) + "\n")
        for row in iter_rows(rows, layout, seed, dirty_fraction):
            out.write(",".join(row) + "\n")
    return path
