"""A sweep's results as a ranked CSV table, a PNG of RMSE per parameter, and Markdown reports."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.hparams import SWEPT_NAMES
from trainer.selection import METRIC, Champion, Decision, TrialResult, rank


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def write_results_csv(results: Sequence[TrialResult], path: str | os.PathLike, param_names: Sequence[str]) -> Path:
    """The ranked table as CSV: rank, index, each parameter, rmse, the other metrics, status, error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ranked = rank(results)
    metric_names = sorted({k for r in results for k in r.metrics if k != METRIC})
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["rank", "index", *param_names, METRIC, *metric_names, "status", "wall_s", "run", "error"])
        for position, result in enumerate(ranked, start=1):
            writer.writerow(
                [
                    position if result.ok else "",
                    result.index,
                    *(_cell(result.params.get(n)) for n in param_names),
                    "" if result.rmse is None else repr(float(result.rmse)),
                    *(_cell(result.metrics.get(n)) for n in metric_names),
                    result.status,
                    "" if result.wall_s is None else f"{result.wall_s:.2f}",
                    result.run,
                    result.error,
                ]
            )
    return path


def read_results_csv(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot_rmse(
    results: Sequence[TrialResult],
    path: str | os.PathLike,
    param_names: Sequence[str],
    title: str = "taxifare sweep: validation RMSE",
) -> Path:
    """PNG with one panel per swept parameter: RMSE of every successful point against its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    good = [r for r in results if r.ok]
    names = list(param_names) or ["index"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    best = rank(good)[0] if good else None
    for ax, name in zip(axes[0], names):
        values = [r.params.get(name, r.index) if name != "index" else r.index for r in good]
        rmses = [float(r.rmse) for r in good]
        if values and _numeric(values):
            xs = [float(v) for v in values]
            positive = all(x > 0 for x in xs)
            if positive and max(xs) / min(xs) >= 20:
                ax.set_xscale("log")
        else:
            labels = sorted({_cell(v) for v in values})
            ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
            xs = [labels.index(_cell(v)) for v in values]
        ax.scatter(xs, rmses, color="tab:blue", zorder=2)
        # join the points that differ only in this parameter, so its effect reads as a line
        others = [n for n in names if n not in (name, "index")]
        groups: dict[str, list[tuple[float, float]]] = {}
        for result, x, y in zip(good, xs, rmses):
            key = ", ".join(f"{n}={_cell(result.params.get(n))}" for n in others)
            groups.setdefault(key, []).append((x, y))
        for key, pairs in groups.items():
            if len(pairs) > 1:
                pairs.sort()
                ax.plot(
                    [x for x, _ in pairs],
                    [y for _, y in pairs],
                    alpha=0.6,
                    zorder=1,
                    label=key if len(groups) <= 6 and key else None,
                )
        if best is not None:
            index = good.index(best)
            ax.scatter([xs[index]], [rmses[index]], color="tab:red", s=80, zorder=3, label="best")
            ax.legend(loc="best", fontsize=8)
        ax.set_xlabel(name)
        ax.set_ylabel("validation RMSE")
        ax.grid(True, alpha=0.3)
    failed = len(results) - len(good)
    fig.suptitle(title + (f" ({failed} failed point{'s' if failed != 1 else ''} not shown)" if failed else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Markdown


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def results_markdown(results: Sequence[TrialResult], param_names: Sequence[str]) -> str:
    lines = [
        "| rank | set | " + " | ".join(param_names) + " | validation RMSE | status |",
        "|---|---|" + "---|" * len(param_names) + "---|---|",
    ]
    for position, result in enumerate(rank(results), start=1):
        status = result.status if not result.error else f"failed: {result.error}"
        lines.append(
            f"| {position if result.ok else '—'} | {result.index} | "
            + " | ".join(_fmt(result.params.get(n)) for n in param_names)
            + f" | {_fmt(result.rmse)} | {status} |"
        )
    return "\n".join(lines)


def decision_markdown(
    decision: Decision,
    *,
    champion: Champion,
    challenger: TrialResult,
    compared_rows: int,
    results: Sequence[TrialResult] = (),
    param_names: Sequence[str] = SWEPT_NAMES,
    endpoint_name: str = "",
) -> str:
    """The champion/challenger report: the decision, both RMSEs and how they were measured."""
    verdict = "**Deploy the challenger**" if decision.deploy else "**Keep the champion**"
    lines = [
        "# taxifare sweep: champion / challenger",
        "",
        f"Decision: {verdict} — {decision.reason}.",
        "",
        "| | RMSE on the comparison rows | model |",
        "|---|---|---|",
        f"| challenger (best of the sweep, set {challenger.index}) | {_fmt(decision.challenger_rmse)} | "
        f"{challenger.run or '—'} |",
        f"| champion (served at {endpoint_name or 'the endpoint'}) | {_fmt(decision.champion_rmse)} | "
        f"{champion.model or champion.description} |",
        "",
        f"- min_improvement: {decision.min_improvement:g}; the challenger had to reach "
        f"{_fmt(decision.threshold) if decision.threshold is not None else 'nothing (no champion)'}",
        f"- both measured on the same {compared_rows} clean validation rows; the champion through "
        f"its endpoint ({champion.description}), the challenger in process",
        f"- challenger's validation RMSE from training: {_fmt(challenger.rmse)}",
        "",
    ]
    if results:
        lines += ["## Sweep results", "", results_markdown(results, param_names), ""]
    return "\n".join(lines)
