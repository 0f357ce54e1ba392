"""Figures of the reliability suite: each test writes what it tried and what it found to
``build/bench/reliability/<name>.json`` (``TAXIFARE_RELIABILITY_OUT`` overrides the folder), and the
bench report (``taxifare bench``) shows them next to the benchmarks."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def figures_dir() -> Path:
    return Path(os.environ.get("TAXIFARE_RELIABILITY_OUT", REPO_ROOT / "build" / "bench" / "reliability"))


def record(name: str, title: str, passed: bool, **figures) -> Path:
    """Write one test's figures; `passed` is what the test asserted (it is written before the
    final assertion so that a failing run leaves its figures too)."""
    out = figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    entry = {
        "name": name,
        "title": title,
        "passed": bool(passed),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "figures": figures,
    }
    path.write_text(json.dumps(entry, indent=2, sort_keys=False, default=str) + "\n")
    return path
