"""The HTML evaluation report of a trained model: predicted vs actual fares, error by distance."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display in pipeline tasks
import matplotlib.pyplot as plt
import numpy as np

EARTH_RADIUS_KM = 6371.0088
DISTANCE_BINS_KM = (0, 1, 2, 3, 5, 8, 12, 20, 30, 1000)


def haversine_km(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle distance in km between arrays of points given in degrees."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))


def error_by_distance(distance_km: np.ndarray, actual: np.ndarray, predicted: np.ndarray) -> list[dict]:
    """RMSE and mean error (predicted − actual) per trip-distance bin."""
    rows = []
    for low, high in zip(DISTANCE_BINS_KM[:-1], DISTANCE_BINS_KM[1:]):
        mask = (distance_km >= low) & (distance_km < high)
        n = int(mask.sum())
        if n == 0:
            continue
        err = predicted[mask] - actual[mask]
        label = f"{low}–{high} km" if high < 1000 else f"≥ {low} km"
        rows.append(
            {
                "distance": label,
                "trips": n,
                "rmse": float(np.sqrt(np.mean(err**2))),
                "mean_error": float(np.mean(err)),
            }
        )
    return rows


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def evaluation_html(
    actual: np.ndarray,
    predicted: np.ndarray,
    distance_km: np.ndarray,
    *,
    title: str = "taxifare evaluation",
    metrics: dict | None = None,
) -> str:
    """A self-contained HTML page (images inlined) that the KFP UI renders."""
    actual = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if actual.shape != predicted.shape or actual.size == 0:
        raise ValueError(f"need equal, non-empty actual/predicted arrays, got {actual.shape} and {predicted.shape}")
    rmse = math.sqrt(float(np.mean((predicted - actual) ** 2)))
    bins = error_by_distance(np.asarray(distance_km, dtype=np.float64), actual, predicted)

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(actual, predicted, s=4, alpha=0.4)
    top = float(np.percentile(np.concatenate([actual, predicted]), 99.5))
    ax.plot([0, top], [0, top], color="black", linewidth=1)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("actual fare ($)")
    ax.set_ylabel("predicted fare ($)")
    ax.set_title(f"predicted vs actual (RMSE {rmse:.2f})")
    scatter_png = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([b["distance"] for b in bins], [b["rmse"] for b in bins])
    ax.set_xlabel("trip distance")
    ax.set_ylabel("RMSE ($)")
    ax.set_title("error by trip distance")
    ax.tick_params(axis="x", rotation=45)
    bins_png = _png(fig)

    metric_rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in (metrics or {"rmse": round(rmse, 4)}).items()
    )
    bin_rows = "".join(
        f"<tr><td>{b['distance']}</td><td>{b['trips']}</td><td>{b['rmse']:.2f}</td><td>{b['mean_error']:+.2f}</td></tr>"
        for b in bins
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
<h2>Metrics</h2><table>{metric_rows}</table>
<h2>Predicted vs actual</h2><img alt="predicted vs actual" src="data:image/png;base64,{scatter_png}">
<h2>Error by trip distance</h2><img alt="error by distance" src="data:image/png;base64,{bins_png}">
<table><tr><th>distance</th><th>trips</th><th>RMSE</th><th>mean error</th></tr>{bin_rows}</table>
</body></html>
"""


def evaluation_page(trained, valid_path: Path, layout, results: dict) -> str:
    """The HTML evaluation of a trained model (a loaded trainer.predictor.Predictor) on up to 5000
    validation rows: predicted vs actual, error by distance."""
    import numpy as np

    from trainer import client

    sample = client.sample_validation_rows(valid_path, layout, size=5000)
    fares = np.asarray(trained.predict(sample.instances), dtype=np.float64)
    actual = np.asarray(sample.labels, dtype=np.float64)
    distance = haversine_km(
        [i[layout.pickup_lon] for i in sample.instances],
        [i[layout.pickup_lat] for i in sample.instances],
        [i[layout.dropoff_lon] for i in sample.instances],
        [i[layout.dropoff_lat] for i in sample.instances],
    )
    shown = {k: results[k] for k in ("rmse", "mae", "eval_rows", "train_rows") if k in results}
    return evaluation_html(actual, fares, distance, title=f"taxifare evaluation ({layout.name})", metrics=shown)
