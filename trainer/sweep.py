"""Parameter sweeps: hyperparameter sets, grids, picking the best model and guarding the endpoint.

Plain logic shared by the ``taxifare_sweep`` pipeline (one pipeline, many trainings) and by
``taxifare sweep`` (many pipeline runs, one per grid point):

* **Hyperparameter sets** (``parse_trials``): the sweep pipeline's list of dicts, each checked
  with pydantic (known names, right types, positive values) before anything trains.
* **Grids** (``parse_grid`` / ``load_grid``): ``grid.yaml`` maps pipeline parameter → list of
  values; names and value types are checked against the pipeline function's signature, so an
  empty grid, a misspelt name or a wrong type is one clear error before any run starts.
* **Best pick** (``best_index``): lowest validation RMSE; ties go to the earliest entry.
* **Champion/challenger** (``decide``): deploy only when the challenger's RMSE is at most the
  champion's minus ``min_improvement``; with no champion, deploy.
* **Reports**: a Markdown decision report, the results table as CSV, and a PNG of RMSE against
  each swept parameter (matplotlib).
* **Vertex hyperparameter tuning**: ``python -m trainer.sweep`` runs one tuning trial — the
  trainer's own command line into the trial's output folder — and reports the validation RMSE
  with cloudml-hypertune.
"""

from __future__ import annotations

import csv
import inspect
import itertools
import json
import logging
import math
import os
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr, ValidationError, create_model

log = logging.getLogger(__name__)

METRIC = "rmse"
HYPERTUNE_METRIC_TAG = "rmse"


class SweepError(ValueError):
    """A sweep that cannot start: a bad grid or hyperparameter set, or nothing to pick from."""


# ---------------------------------------------------------------------------------------------
# Value checks shared by hyperparameter sets and grids


def _no_text_or_bool(value: Any) -> Any:
    # pydantic's lax mode would read "0.01" or True as numbers; a grid value of the wrong type
    # is a mistake worth reporting. Integral floats (JSON/protobuf numbers) stay accepted.
    if isinstance(value, (str, bytes, bool)):
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")
    return value


Int = Annotated[int, BeforeValidator(_no_text_or_bool)]
Float = Annotated[float, BeforeValidator(_no_text_or_bool)]

_TYPES: dict[Any, Any] = {
    int: Int,
    float: Float,
    str: StrictStr,
    bool: StrictBool,
    list: list,
    dict: dict,
}


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def _format_errors(error: ValidationError, where: str) -> str:
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown name"
        got = "" if "got " in message else f" (got {item.get('input')!r})"
        lines.append(f"{where}{location}: {message}{got}")
    return "; ".join(lines)


# ---------------------------------------------------------------------------------------------
# Hyperparameter sets of the sweep pipeline


def _hidden_units(text: Any) -> Any:
    if isinstance(text, list) and text and all(isinstance(u, int) and not isinstance(u, bool) for u in text):
        text = " ".join(str(u) for u in text)  # [64, 32] is read as "64 32"
    if not isinstance(text, str):
        return text  # the type check reports it
    try:
        units = [int(u) for u in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f'expected layer sizes like "64 32", got {text!r}') from None
    if not units or any(u <= 0 for u in units):
        raise ValueError(f'expected positive layer sizes like "64 32", got {text!r}')
    return " ".join(str(u) for u in units)


class HyperParams(BaseModel):
    """One hyperparameter set: what the trainer's flags take (``--hidden_units`` …)."""

    model_config = ConfigDict(extra="forbid")

    hidden_units: Annotated[StrictStr, BeforeValidator(_hidden_units)] = "64 32"
    learning_rate: Annotated[Float, Field(gt=0, le=10)] = 0.003
    batch_size: Annotated[Int, Field(gt=0)] = 512
    train_steps: Annotated[Int, Field(gt=0)] = 3000
    embedding_dim: Annotated[Int, Field(ge=0)] = 0  # feature switch: grid-cell embeddings off (0) or on
    towers: Annotated[Int, Field(gt=0)] = 5
    seed: Int = 42


HPARAM_NAMES = tuple(HyperParams.model_fields)
SWEPT_NAMES = tuple(n for n in HPARAM_NAMES if n != "seed")


# The trainer flag each hyperparameter goes to (Vertex AI tuning passes --<flag>=<value>).
TRAINER_FLAGS = {
    "hidden_units": "hidden_units",
    "learning_rate": "learning_rate",
    "batch_size": "train_batch_size",
    "train_steps": "train_steps",
    "embedding_dim": "embedding_dim",
    "towers": "towers",
    "seed": "seed",
}


def tuner_parameters() -> dict[str, tuple[Any, Any]]:
    """name → (type, default) of what a hyperparameter-tuning grid may name (the trainer's knobs)."""
    kinds = {
        "hidden_units": str,
        "learning_rate": float,
        "batch_size": int,
        "train_steps": int,
        "embedding_dim": int,
        "towers": int,
        "seed": int,
    }
    return {name: (kinds[name], HyperParams.model_fields[name].default) for name in HPARAM_NAMES}


def parse_trials(trials: Sequence[Mapping[str, Any]], *, seed: int | None = None) -> list[dict]:
    """Check every hyperparameter set; returns them complete (defaults filled) with exact types.

    ``seed`` is the default for sets that do not name their own.

    Raises SweepError naming the set (by position) and the field for the first bad set.
    """
    if not isinstance(trials, (list, tuple)) or not trials:
        raise SweepError(
            "no hyperparameter sets: expected a non-empty list of dicts like "
            '{"hidden_units": "64 32", "learning_rate": 0.003, "batch_size": 512, "train_steps": 3000}'
        )
    checked = []
    for index, trial in enumerate(trials):
        if not isinstance(trial, Mapping):
            raise SweepError(f"hyperparameter set {index}: expected a dict, got {type(trial).__name__} {trial!r}")
        try:
            values = dict(trial)
            if seed is not None:
                values.setdefault("seed", seed)
            checked.append(HyperParams(**values).model_dump())
        except ValidationError as exc:
            raise SweepError(
                _format_errors(exc, f"hyperparameter set {index}: ") + f"; valid names: {', '.join(HPARAM_NAMES)}"
            ) from None
    return checked


# ---------------------------------------------------------------------------------------------
# Grids of pipeline parameters


def pipeline_parameters(pipeline: Any) -> dict[str, tuple[Any, Any]]:
    """name → (type, default) of a pipeline function (a ``@dsl.pipeline`` or the plain function)."""
    function = getattr(pipeline, "pipeline_func", pipeline)
    hints = typing.get_type_hints(function)
    parameters = {}
    for name, parameter in inspect.signature(function).parameters.items():
        annotation = hints.get(name, parameter.annotation)
        origin = typing.get_origin(annotation) or annotation
        parameters[name] = (origin, parameter.default)
    return parameters


@dataclass
class Grid:
    """A validated grid: parameter → values, in the file's order."""

    values: dict[str, list]
    source: str = "<grid>"

    @property
    def names(self) -> list[str]:
        return list(self.values)

    def points(self) -> list[dict]:
        """Every combination (cartesian product), the last parameter varying fastest."""
        names = self.names
        return [dict(zip(names, combo)) for combo in itertools.product(*(self.values[n] for n in names))]

    def __len__(self) -> int:
        return math.prod(len(v) for v in self.values.values())


def _parameter_model(parameters: Mapping[str, tuple[Any, Any]], names: Sequence[str]) -> type[BaseModel]:
    fields = {}
    for name in names:
        kind, _default = parameters[name]
        fields[name] = (list[_TYPES.get(kind, Any)], ...)
    return create_model("GridValues", __config__=ConfigDict(extra="forbid"), **fields)


def check_parameters(values: Mapping[str, Any], parameters: Mapping[str, tuple[Any, Any]], *, where: str) -> dict:
    """Check fixed parameter values (name → value) against the pipeline's parameters."""
    grid = parse_grid({name: [value] for name, value in values.items()}, parameters, source=where, allow_empty=True)
    return {name: vals[0] for name, vals in grid.values.items()}


def parse_grid(
    data: Any,
    parameters: Mapping[str, tuple[Any, Any]],
    *,
    source: str = "<grid>",
    allow_empty: bool = False,
) -> Grid:
    """Validate a grid (parameter → list of values) against a pipeline's parameters."""
    valid = ", ".join(parameters)
    if data is None or (isinstance(data, Mapping) and not data):
        if allow_empty:
            return Grid({}, source)
        raise SweepError(
            f"{source}: the grid is empty; map pipeline parameters to lists of values, "
            f"e.g. `train_steps: [500, 1000]` (parameters: {valid})"
        )
    if not isinstance(data, Mapping):
        raise SweepError(f"{source}: expected a mapping of parameter → list of values, got {type(data).__name__}")
    unknown = [name for name in data if name not in parameters]
    if unknown:
        raise SweepError(
            f"{source}: unknown parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(str(n)) for n in unknown)}; valid names: {valid}"
        )
    for name, values in data.items():
        if not isinstance(values, list):
            raise SweepError(f"{source}: {name}: expected a list of values, got {type(values).__name__} {values!r}")
        if not values:
            raise SweepError(f"{source}: {name}: the list of values is empty")
    model = _parameter_model(parameters, list(data))
    try:
        checked = model(**data)
    except ValidationError as exc:
        expected = {n: _type_name(parameters[n][0]) for n in data}
        details = []
        for item in exc.errors():
            name, *rest = item["loc"]
            position = f"[{rest[0]}]" if rest else ""
            details.append(
                f"{name}{position}: expected {expected[name]}, got {type(item.get('input')).__name__} "
                f"{item.get('input')!r}"
            )
        raise SweepError(f"{source}: wrong value type: " + "; ".join(details)) from None
    values = {name: list(getattr(checked, name)) for name in data}
    for name, vals in values.items():
        duplicates = {json.dumps(v, sort_keys=True) for v in vals}
        if len(duplicates) != len(vals):
            raise SweepError(f"{source}: {name}: a value is listed twice ({vals})")
    return Grid(values, source)


def load_grid(path: str | os.PathLike, parameters: Mapping[str, tuple[Any, Any]]) -> Grid:
    """Read and validate grid.yaml (or .json)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SweepError(f"{path}: no such grid file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not valid YAML: {exc}") from None
    return parse_grid(data, parameters, source=str(path))


# ---------------------------------------------------------------------------------------------
# Best pick


def _usable(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def best_index(rmses: Sequence[float | None]) -> int:
    """Position of the lowest RMSE; on a tie the earliest wins. Missing or non-finite values never win."""
    candidates = [(float(r), i) for i, r in enumerate(rmses) if _usable(r)]
    if not candidates:
        raise SweepError(f"no usable RMSE to pick from: {list(rmses)}")
    return min(candidates)[1]


# ---------------------------------------------------------------------------------------------
# Champion / challenger


@dataclass(frozen=True)
class Decision:
    deploy: bool
    challenger_rmse: float
    champion_rmse: float | None
    min_improvement: float
    reason: str

    @property
    def verdict(self) -> str:
        return "deploy" if self.deploy else "keep"

    @property
    def threshold(self) -> float | None:
        """The RMSE the challenger had to reach (None without a champion)."""
        return None if self.champion_rmse is None else self.champion_rmse - self.min_improvement

    def as_dict(self) -> dict:
        return {
            "decision": self.verdict,
            "challenger_rmse": self.challenger_rmse,
            "champion_rmse": self.champion_rmse,
            "min_improvement": self.min_improvement,
            "threshold": self.threshold,
            "reason": self.reason,
        }


def decide(challenger_rmse: float, champion_rmse: float | None, min_improvement: float = 0.0) -> Decision:
    """Deploy when there is no champion, or when challenger ≤ champion − min_improvement."""
    if not _usable(challenger_rmse):
        raise SweepError(f"challenger RMSE must be a finite number >= 0, got {challenger_rmse!r}")
    if not (isinstance(min_improvement, (int, float)) and math.isfinite(min_improvement) and min_improvement >= 0):
        raise SweepError(f"min_improvement must be a finite number >= 0, got {min_improvement!r}")
    challenger_rmse, min_improvement = float(challenger_rmse), float(min_improvement)
    if champion_rmse is None:
        return Decision(True, challenger_rmse, None, min_improvement, "no model is being served: deploy the challenger")
    if not _usable(champion_rmse):
        raise SweepError(f"champion RMSE must be a finite number >= 0 or None, got {champion_rmse!r}")
    champion_rmse = float(champion_rmse)
    threshold = champion_rmse - min_improvement
    # a hair of tolerance so that an improvement of exactly min_improvement counts despite rounding
    if challenger_rmse <= threshold + 1e-9 * max(1.0, champion_rmse):
        reason = (
            f"challenger RMSE {challenger_rmse:.4f} ≤ champion {champion_rmse:.4f} − {min_improvement:g} "
            f"= {threshold:.4f}: deploy the challenger"
        )
        return Decision(True, challenger_rmse, champion_rmse, min_improvement, reason)
    reason = (
        f"challenger RMSE {challenger_rmse:.4f} > champion {champion_rmse:.4f} − {min_improvement:g} "
        f"= {threshold:.4f}: keep the champion"
    )
    return Decision(False, challenger_rmse, champion_rmse, min_improvement, reason)


@dataclass
class Champion:
    """What the endpoint serves now, measured on the comparison rows (None fields: no champion)."""

    rmse: float | None
    description: str
    model: str | None = None


def measure_champion(
    *,
    target: str,
    endpoint_name: str,
    instances: list[dict],
    labels: list[float],
    project: str = "",
    region: str = "",
    batch_size: int = 100,
) -> Champion:
    """RMSE of the model the endpoint of that name serves now, through the endpoint itself."""
    from trainer import client

    if target == "local":
        from trainer import local_endpoint

        served = local_endpoint.get(endpoint_name)
        if served is None:
            return Champion(None, f"no local endpoint named {endpoint_name!r} is running")
        fares = client.predict(served.predict_url, instances, batch_size=batch_size)
        return Champion(client.rmse(fares, labels), f"local endpoint {served.predict_url}", served.model_uri)
    if target == "vertex":
        from trainer import vertex

        endpoint = vertex.find_endpoint(endpoint_name, project, region)
        if endpoint is None or not endpoint.gca_resource.deployed_models:
            return Champion(None, f"no Vertex AI endpoint named {endpoint_name!r} serves a model")
        fares = vertex.predict(endpoint.resource_name, instances, batch_size=batch_size, project=project, region=region)
        deployed = endpoint.gca_resource.deployed_models[0]
        return Champion(client.rmse(fares, labels), f"Vertex AI endpoint {endpoint.resource_name}", deployed.model)
    raise SweepError(f"target={target!r}: expected local or vertex")


def model_rmse(model_dir: str | os.PathLike, instances: list[dict], labels: list[float]) -> float:
    """RMSE of a trained model (trainer output dir or SavedModel) on the given rows, in process."""
    from trainer import client, predictor

    fares = predictor.Predictor.load(model_dir).predict(instances)
    return client.rmse(fares, labels)


# ---------------------------------------------------------------------------------------------
# Results table


@dataclass
class TrialResult:
    """One trained configuration: its parameters and validation RMSE, or the error that stopped it."""

    index: int
    params: dict
    rmse: float | None = None
    metrics: dict = field(default_factory=dict)
    error: str = ""
    wall_s: float | None = None
    run: str = ""

    state: str = ""  # what the runner reports when there is no metric to read (e.g. a KFP run)

    @property
    def ok(self) -> bool:
        return not self.error and _usable(self.rmse)

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        return "succeeded" if self.ok else (self.state or "no metric")


def rank(results: Sequence[TrialResult]) -> list[TrialResult]:
    """Succeeded results by RMSE (ties: earlier index first), then the failed ones by index."""
    return sorted(results, key=lambda r: (0, float(r.rmse), r.index) if r.ok else (1, 0.0, r.index))


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


# ---------------------------------------------------------------------------------------------
# Vertex AI hyperparameter tuning: one trial


def report_hypertune_metric(rmse: float, *, global_step: int | None = None, tag: str = HYPERTUNE_METRIC_TAG) -> Path:
    """Report the validation RMSE to Vertex AI hyperparameter tuning (cloudml-hypertune)."""
    import hypertune

    reporter = hypertune.HyperTune()
    reporter.report_hyperparameter_tuning_metric(
        hyperparameter_metric_tag=tag, metric_value=float(rmse), global_step=global_step
    )
    log.info("reported %s=%.4f for trial %s to %s", tag, rmse, reporter.trial_id, reporter.metric_path)
    return Path(reporter.metric_path)


def fuse_path(uri: str) -> str:
    """gs://bucket/x → /gcs/bucket/x (Cloud Storage FUSE in Vertex jobs); other paths unchanged."""
    return "/gcs/" + uri[len("gs://") :] if uri.startswith("gs://") else uri


def _replace_flag(argv: list[str], flag: str, value: str) -> list[str]:
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == flag:
            skip = i + 1 < len(argv)
            continue
        if arg.startswith(flag + "="):
            continue
        out.append(arg)
    return [*out, flag, value]


def trial_argv(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    """The trainer's arguments for one tuning trial.

    Every trial writes to its own folder: Vertex gives each trial ``AIP_MODEL_DIR`` (under the
    job's base output directory); gs:// paths are read through Cloud Storage FUSE.
    """
    args = list(argv)
    model_dir = environ.get("AIP_MODEL_DIR")
    if model_dir:
        args = _replace_flag(args, "--output_dir", fuse_path(model_dir.rstrip("/")))
    fixed = []
    for arg in args:
        if arg.startswith("gs://"):
            arg = fuse_path(arg)
        elif "=gs://" in arg:
            flag, _, uri = arg.partition("=")
            arg = f"{flag}={fuse_path(uri)}"
        fixed.append(arg)
    return fixed


def _flag_value(argv: Sequence[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def trial_main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """One hyperparameter-tuning trial: train with the trainer's flags, then report the RMSE."""
    from trainer import task

    args = trial_argv(list(sys.argv[1:] if argv is None else argv), environ)
    code = task.main(args)
    if code != 0:
        return code
    output_dir = _flag_value(args, "--output_dir")
    if output_dir is None:
        log.error("no --output_dir among the trial's arguments: %s", args)
        return 2
    results = json.loads((Path(output_dir) / "eval_metrics.json").read_text())
    report_hypertune_metric(results[METRIC], global_step=results.get("steps"))
    return 0


if __name__ == "__main__":
    sys.exit(trial_main())
