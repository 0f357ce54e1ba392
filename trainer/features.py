"""Feature engineering inside the Keras graph (so serving takes the raw instance).

``TaxiFeatures`` is a Keras layer: raw serving fields in (float32 coordinates and passengers,
and for the dated layout the ``pickup_datetime`` string), and out:

* ``numeric`` — [batch, n] float32: clipped coordinates, east/north deltas (km), great-circle
  and Manhattan-grid distances, bearing, distances to JFK, LaGuardia, Newark and midtown,
  airport flags, how far west of the Hudson each end is and whether the trip crosses it
  (into New Jersey, where the meter does not apply), passengers; for the dated layout also the pickup time (years since 2009,
  hour and weekday on circles, night/peak/weekend flags, the 2012-09-04 tariff change);
* ``pickup_cell`` / ``dropoff_cell`` — [batch] int: cells of a grid over the city, and
  ``trip_cell`` — the pickup×dropoff cell pair hashed into ``CROSS_BUCKETS``.

Normalisation is not here: the model adapts a ``keras.layers.Normalization`` on these features
computed over a sample of the training data.
"""

from __future__ import annotations

import math
from datetime import date

import keras
import numpy as np
import tensorflow as tf

from trainer import schema
from trainer.schema import Layout

EARTH_RADIUS_KM = 6371.0088
KM_PER_DEG_LAT = 110.574
KM_PER_DEG_LON_EQUATOR = 111.320
MANHATTAN_GRID_ANGLE_DEG = 29.0  # Manhattan's street grid is rotated ~29° from true north

PLACES = {  # (lon, lat)
    "jfk": (-73.7781, 40.6413),
    "lga": (-73.8740, 40.7769),
    "ewr": (-74.1745, 40.6895),
    "midtown": (-73.9855, 40.7580),  # Times Square
}
AIRPORTS = ("jfk", "lga", "ewr")
# The Hudson along Manhattan's west shore, (lat, lon) south to north: New Jersey lies west of it.
# Trips across it leave the city, where the meter does not apply (negotiated or double fares).
HUDSON = (
    (40.70, -74.020),
    (40.75, -74.012),
    (40.80, -73.975),
    (40.85, -73.950),
    (40.90, -73.922),
    (40.95, -73.905),
)
# Only between these latitudes is "west of the river" known to mean New Jersey: further south
# lies the harbour (and Staten Island), further north the river is not traced.
HUDSON_LAT_RANGE = (40.69, 40.95)
NJ_MARGIN_KM = 0.3
AIRPORT_RADIUS_KM = 2.0

# Grid over the busy part of the city (cells beyond the edges hold everything outside).
GRID_LON = tuple(np.round(np.linspace(-74.03, -73.75, 15), 4).tolist())
GRID_LAT = tuple(np.round(np.linspace(40.63, 40.85, 15), 4).tolist())
GRID_CELLS = (len(GRID_LON) + 1) * (len(GRID_LAT) + 1)
CROSS_BUCKETS = 4096

EPOCH_DAY_2009 = (date(2009, 1, 1) - date(1970, 1, 1)).days
TARIFF_CHANGE_DAY = (date(2012, 9, 4) - date(1970, 1, 1)).days

BASE_FEATURES = (
    "pickup_lon",
    "pickup_lat",
    "dropoff_lon",
    "dropoff_lat",
    "east_km",
    "north_km",
    "distance_km",
    "log_distance_km",
    "grid_distance_km",
    "bearing_sin",
    "bearing_cos",
    *(f"{end}_to_{place}_km" for end in ("pickup", "dropoff") for place in PLACES),
    *(f"{end}_at_{airport}" for end in ("pickup", "dropoff") for airport in AIRPORTS),
    "pickup_west_of_hudson_km",
    "dropoff_west_of_hudson_km",
    "crosses_hudson",
    "passengers",
)
TIME_FEATURES = (
    "years_since_2009",
    "new_tariff",
    "hour_sin",
    "hour_cos",
    "weekday_sin",
    "weekday_cos",
    "weekend",
    "night",
    "weekday_peak",
)


def feature_names(layout: Layout) -> tuple[str, ...]:
    return BASE_FEATURES + (TIME_FEATURES if layout.pickup_datetime else ())


def haversine_km(lon1, lat1, lon2, lat2):
    """Great-circle distance in km between tensors of degrees."""
    rad = math.pi / 180.0
    phi1, phi2 = lat1 * rad, lat2 * rad
    a = tf.sin((lat2 - lat1) * rad / 2) ** 2 + tf.cos(phi1) * tf.cos(phi2) * tf.sin((lon2 - lon1) * rad / 2) ** 2
    return 2.0 * EARTH_RADIUS_KM * tf.asin(tf.sqrt(tf.clip_by_value(a, 0.0, 1.0)))


def east_north_km(lon1, lat1, lon2, lat2):
    """Local flat-earth displacement (east, north) in km from point 1 to point 2."""
    mean_lat = (lat1 + lat2) / 2.0 * (math.pi / 180.0)
    return (lon2 - lon1) * KM_PER_DEG_LON_EQUATOR * tf.cos(mean_lat), (lat2 - lat1) * KM_PER_DEG_LAT


def grid_distance_km(east, north):
    """L1 distance along Manhattan's rotated street grid."""
    theta = MANHATTAN_GRID_ANGLE_DEG * math.pi / 180.0
    along = east * math.sin(theta) + north * math.cos(theta)
    across = east * math.cos(theta) - north * math.sin(theta)
    return tf.abs(along) + tf.abs(across)


def west_of_hudson_km(lon, lat):
    """Signed east-west distance (km) west of the Hudson; 0 outside ``HUDSON_LAT_RANGE``."""
    river = tf.fill(tf.shape(lat), HUDSON[0][1])
    for (lat0, lon0), (lat1, lon1) in zip(HUDSON, HUDSON[1:]):
        river += (lon1 - lon0) * tf.clip_by_value((lat - lat0) / (lat1 - lat0), 0.0, 1.0)
    west = (river - lon) * KM_PER_DEG_LON_EQUATOR * tf.cos(lat * (math.pi / 180.0))
    traced = (lat > HUDSON_LAT_RANGE[0]) & (lat <= HUDSON_LAT_RANGE[1])
    return tf.where(traced, west, tf.zeros_like(west))


def parse_pickup_datetime(text: tf.Tensor) -> dict[str, tf.Tensor]:
    """'2011-01-28 20:42:59 UTC' → days since 1970-01-01, hour (fractional), weekday (Mon=0)."""

    def part(start, length):
        return tf.strings.to_number(tf.strings.substr(text, start, length), tf.int64)

    year, month, day = part(0, 4), part(5, 2), part(8, 2)
    hour = tf.cast(part(11, 2), tf.float32) + tf.cast(part(14, 2), tf.float32) / 60.0
    # Days from civil date (proleptic Gregorian), valid for years >= 1.
    y = year - tf.cast(month <= 2, tf.int64)
    era = y // 400
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    return {"days": days, "hour": hour, "weekday": weekday}


class TaxiFeatures(keras.layers.Layer):
    """Raw serving fields → engineered features (see the module docstring)."""

    def __init__(self, layout: str = "lab", **kwargs):
        super().__init__(**kwargs)
        self.layout_name = layout
        self.layout = schema.get_layout(layout)

    def get_config(self):
        return {**super().get_config(), "layout": self.layout_name}

    def call(self, inputs):
        lay = self.layout
        lon_lo, lon_hi = schema.NYC_LON_RANGE
        lat_lo, lat_hi = schema.NYC_LAT_RANGE

        def coord(name, lo, hi):
            return tf.clip_by_value(tf.cast(inputs[name], tf.float32), lo, hi)

        plon, plat = coord(lay.pickup_lon, lon_lo, lon_hi), coord(lay.pickup_lat, lat_lo, lat_hi)
        dlon, dlat = coord(lay.dropoff_lon, lon_lo, lon_hi), coord(lay.dropoff_lat, lat_lo, lat_hi)
        east, north = east_north_km(plon, plat, dlon, dlat)
        distance = haversine_km(plon, plat, dlon, dlat)
        cols = [plon, plat, dlon, dlat, east, north, distance, tf.math.log1p(distance)]
        cols.append(grid_distance_km(east, north))
        bearing = tf.atan2(north, east)
        cols += [tf.sin(bearing), tf.cos(bearing)]
        to_place = {}
        for end, (lon, lat) in (("pickup", (plon, plat)), ("dropoff", (dlon, dlat))):
            for place, (p_lon, p_lat) in PLACES.items():
                to_place[end, place] = haversine_km(lon, lat, p_lon, p_lat)
                cols.append(to_place[end, place])
        for end in ("pickup", "dropoff"):
            for airport in AIRPORTS:
                cols.append(tf.cast(to_place[end, airport] < AIRPORT_RADIUS_KM, tf.float32))
        pickup_west, dropoff_west = west_of_hudson_km(plon, plat), west_of_hudson_km(dlon, dlat)
        in_nj = [tf.cast(w > NJ_MARGIN_KM, tf.float32) for w in (pickup_west, dropoff_west)]
        cols += [pickup_west, dropoff_west, tf.abs(in_nj[0] - in_nj[1])]
        cols.append(tf.clip_by_value(tf.cast(inputs[lay.passengers], tf.float32), 0.0, 9.0))

        if lay.pickup_datetime:
            when = parse_pickup_datetime(inputs[lay.pickup_datetime])
            days = tf.cast(when["days"], tf.float32)
            hour, weekday = when["hour"], tf.cast(when["weekday"], tf.float32)
            two_pi = 2.0 * math.pi
            weekend = tf.cast(weekday >= 5.0, tf.float32)
            cols += [
                (days + hour / 24.0 - EPOCH_DAY_2009) / 365.2425,
                tf.cast(when["days"] >= TARIFF_CHANGE_DAY, tf.float32),
                tf.sin(two_pi * hour / 24.0),
                tf.cos(two_pi * hour / 24.0),
                tf.sin(two_pi * weekday / 7.0),
                tf.cos(two_pi * weekday / 7.0),
                weekend,
                tf.cast((hour >= 20.0) | (hour < 6.0), tf.float32),
                (1.0 - weekend) * tf.cast((hour >= 16.0) & (hour < 20.0), tf.float32),
            ]
        numeric = tf.stack(cols, axis=1)

        def cell(lon, lat):
            col = tf.raw_ops.Bucketize(input=lon, boundaries=list(GRID_LON))
            row = tf.raw_ops.Bucketize(input=lat, boundaries=list(GRID_LAT))
            return row * (len(GRID_LON) + 1) + col

        pickup_cell, dropoff_cell = cell(plon, plat), cell(dlon, dlat)
        pair = tf.strings.as_string(pickup_cell * GRID_CELLS + dropoff_cell)
        trip_cell = tf.strings.to_hash_bucket_fast(pair, CROSS_BUCKETS)
        return {
            "numeric": numeric,
            "pickup_cell": pickup_cell,
            "dropoff_cell": dropoff_cell,
            "trip_cell": trip_cell,
        }

    def compute_output_spec(self, inputs):
        any_input = next(iter(inputs.values()))
        batch = any_input.shape[0]
        n = len(feature_names(self.layout))
        return {
            "numeric": keras.KerasTensor((batch, n), dtype="float32"),
            "pickup_cell": keras.KerasTensor((batch,), dtype="int32"),
            "dropoff_cell": keras.KerasTensor((batch,), dtype="int32"),
            "trip_cell": keras.KerasTensor((batch,), dtype="int64"),
        }


class Winsorize(keras.layers.Layer):
    """Clip each feature column to the range seen in training data (quantiles of a sample).

    Keeps the network inside its training support: an implausible instance (a dropoff 50 km
    north of the city) gets the prediction of the most extreme trips seen, not an extrapolation.
    """

    def __init__(self, quantile: float = 0.001, **kwargs):
        super().__init__(**kwargs)
        self.quantile = quantile

    def build(self, input_shape):
        n = input_shape[-1]
        self.lo = self.add_weight(shape=(n,), initializer="zeros", trainable=False, name="lo")
        self.hi = self.add_weight(shape=(n,), initializer="zeros", trainable=False, name="hi")

    def adapt(self, sample: np.ndarray) -> None:
        if not self.built:
            self.build(sample.shape)
        self.lo.assign(np.quantile(sample, self.quantile, axis=0).astype("float32"))
        self.hi.assign(np.quantile(sample, 1.0 - self.quantile, axis=0).astype("float32"))

    def call(self, x):
        return tf.clip_by_value(x, self.lo, self.hi)

    def get_config(self):
        return {**super().get_config(), "quantile": self.quantile}
