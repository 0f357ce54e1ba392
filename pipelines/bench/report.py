"""What every benchmark report shares: the number format, the summary-table row, the machine it ran on."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[2]


def number(value, digits: int = 2) -> str:
    """A figure as the reports print it: — when missing, thousands separated from 1,000 up."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int) or (isinstance(value, float) and abs(value) >= 1000):
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


class Row(NamedTuple):
    """One row of the summary table (`taxifare bench`, README.md); each cell is Markdown."""

    area: str
    measured: str
    compared: str = ""
    verdict: str = ""

    def markdown(self) -> str:
        # An empty cell is a single space, as in "| … | | pass |".
        return "|" + "|".join(f" {cell} " if cell else " " for cell in self) + "|"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine(loadavg_before: list[float]) -> dict:
    """The machine a run measured on, with its load average before and now (a shared machine is noisy)."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_before": loadavg_before,
        "loadavg_after": load_average(),
    }
