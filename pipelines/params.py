"""Pipeline parameters checked before anything runs: NAME=VALUE, parameter files and sweep grids.

A pipeline's parameters are read from its ``@dsl.pipeline`` function's signature or from a
compiled spec's ``root.inputDefinitions`` (``parameters``), and every value — typed text from the
command line (``--param k=v``), a parameter file or a grid of values — is checked against them with
one pydantic model: an unknown name or a value of the wrong type is an error that names it and lists
the valid parameters with their types.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, ConfigDict, StrictBool, StrictStr, ValidationError, create_model

from trainer.hparams import no_text_or_bool

# KFP pipeline-spec parameter types → Python types.
_SPEC_TYPES: dict[str, type] = {
    "STRING": str,
    "NUMBER_INTEGER": int,
    "NUMBER_DOUBLE": float,
    "BOOLEAN": bool,
    "LIST": list,
    "STRUCT": dict,
}
# Typed values (YAML, JSON) must have the declared type: "0.01" or True is not a number.
_STRICT_TYPES: dict[Any, Any] = {
    int: Annotated[int, BeforeValidator(no_text_or_bool)],
    float: Annotated[float, BeforeValidator(no_text_or_bool)],
    str: StrictStr,
    bool: StrictBool,
}

Parameters = dict[str, tuple[Any, Any]]  # name → (type, default); default ... when required


class ParameterError(ValueError):
    """Pipeline parameters that do not match the pipeline's declaration."""


# -- a pipeline's declaration ----------------------------------------------------------------------
def load_spec(path: str | Path) -> dict:
    """A compiled pipeline spec (YAML or JSON) as a dict."""
    text = Path(path).read_text()
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc]
    except yaml.YAMLError as exc:
        raise ParameterError(
            f"{path}: not a compiled KFP pipeline spec (not YAML: {str(exc).splitlines()[0]})"
        ) from None
    if not documents or not isinstance(documents[0], dict) or "root" not in documents[0]:
        raise ParameterError(f"{path}: not a compiled KFP pipeline spec (no root)")
    return documents[0]


def _from_function(pipeline) -> Parameters:
    function = getattr(pipeline, "pipeline_func", pipeline)
    hints = typing.get_type_hints(function)
    parameters: Parameters = {}
    for name, parameter in inspect.signature(function).parameters.items():
        annotation = hints.get(name, parameter.annotation)
        annotation = Any if annotation is inspect.Parameter.empty else typing.get_origin(annotation) or annotation
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        parameters[name] = (annotation, default)
    return parameters


def _from_spec(spec: Mapping) -> Parameters:
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    parameters: Parameters = {}
    for name, definition in declared.items():
        kind = definition.get("parameterType", "STRING")
        python_type = _SPEC_TYPES.get(kind)
        if python_type is None:
            raise ParameterError(f"parameter {name!r}: unsupported parameterType {kind!r} in the spec")
        if "defaultValue" in definition:
            default = definition["defaultValue"]
            if python_type is int and isinstance(default, float) and default.is_integer():
                default = int(default)  # the spec stores integers as JSON numbers
        elif definition.get("isOptional"):
            default = None
        else:
            default = ...
        parameters[name] = (python_type, default)
    return parameters


def parameters_of(source) -> Parameters:
    """name → (type, default) of a pipeline function, a compiled spec (dict or file), or such a
    mapping itself (e.g. ``trainer.hparams.tuner_parameters()``)."""
    if isinstance(source, (str, Path)):
        return _from_spec(load_spec(source))
    if isinstance(source, Mapping):
        if "root" in source:
            return _from_spec(source)
        return dict(source)
    if not hasattr(source, "pipeline_func") and hasattr(source, "pipeline_spec"):  # a pipeline loaded from YAML
        from google.protobuf import json_format

        return _from_spec(json_format.MessageToDict(source.pipeline_spec))
    return _from_function(source)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def describe(parameters: Parameters) -> str:
    """``name: type = default`` for every parameter, one per line."""
    return "\n".join(
        f"{name}: {_type_name(kind)} {'required' if default is ... else f'= {default!r}'}"
        for name, (kind, default) in parameters.items()
    )


def _model(parameters: Parameters, *, strict: bool, lists: bool = False, names: Sequence[str] | None = None):
    fields = {}
    for name in parameters if names is None else names:
        kind, default = parameters[name]
        field_type = _STRICT_TYPES.get(kind, kind) if strict else kind
        if default is None:
            field_type = field_type | None
        fields[name] = (list[field_type], ...) if lists else (field_type, default)
    return create_model("PipelineParameters", __config__=ConfigDict(extra="forbid"), **fields)


# -- values from the command line ------------------------------------------------------------------
def parse_assignments(assignments: Sequence[str], flag: str = "--param") -> dict[str, str]:
    """``["k=v", …]`` → ``{"k": "v"}`` (text; ``validate`` types it); a malformed or repeated item is an error."""
    values: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParameterError(f"{flag} {item!r}: expected NAME=VALUE")
        if key in values:
            raise ParameterError(f"{flag} {key!r} given twice")
        values[key] = value
    return values


def _coerce_text(value: Any, annotation: Any) -> Any:
    """Lists and dicts given as text on the command line are JSON."""
    if isinstance(value, str) and annotation in (list, dict):
        try:
            return json.loads(value)
        except ValueError:
            return value  # pydantic reports the type error with the parameter's name
    return value


def validate(source, values: Mapping[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """Checks ``values`` against the pipeline's parameters; returns them typed (only those given).

    Text (from the command line) is converted to the declared type unless ``strict`` (typed values
    from YAML or JSON must already have it). Raises ParameterError listing every unknown name or
    bad value, and the valid parameters.
    """
    parameters = parameters_of(source)
    given = {k: _coerce_text(v, parameters[k][0]) if k in parameters else v for k, v in values.items()}
    try:
        checked = _model(parameters, strict=strict).model_validate(given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"])
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown parameter {name!r}")
            elif error["type"] == "missing":
                problems.append(f"parameter {name!r} is required")
            else:
                message = error["msg"].removeprefix("Value error, ")
                problems.append(f"parameter {name!r}: {message} (got {error.get('input')!r})")
        # the first line names every problem; the valid parameters follow as help
        raise ParameterError(
            "invalid pipeline parameters: "
            + "; ".join(problems)
            + "\nvalid parameters:\n  "
            + describe(parameters).replace("\n", "\n  ")
        ) from None
    return {name: getattr(checked, name) for name in given}


def effective(source, given: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Every parameter a run gets: the ``given`` values over the pipeline's declared defaults, in
    declaration order, and the names left at their default (what a run page marks as such)."""
    values: dict[str, Any] = {}
    defaults: list[str] = []
    for name, (_kind, default) in parameters_of(source).items():
        if name in given:
            values[name] = given[name]
        elif default is not ...:
            values[name] = default
            defaults.append(name)
    values.update({name: value for name, value in given.items() if name not in values})
    return values, defaults


# -- grids of values (sweeps) ----------------------------------------------------------------------
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


def parse_grid(data: Any, source_of_parameters, *, source: str = "<grid>") -> Grid:
    """Validate a grid (parameter → list of typed values) against a pipeline's parameters."""
    parameters = parameters_of(source_of_parameters)
    valid = ", ".join(parameters)
    if data is None or (isinstance(data, Mapping) and not data):
        raise ParameterError(
            f"{source}: the grid is empty; map pipeline parameters to lists of values, "
            f"e.g. `train_steps: [500, 1000]` (parameters: {valid})"
        )
    if not isinstance(data, Mapping):
        raise ParameterError(f"{source}: expected a mapping of parameter → list of values, got {type(data).__name__}")
    unknown = [name for name in data if name not in parameters]
    if unknown:
        raise ParameterError(
            f"{source}: unknown parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(str(n)) for n in unknown)}; valid names: {valid}"
        )
    for name, values in data.items():
        if not isinstance(values, list):
            raise ParameterError(f"{source}: {name}: expected a list of values, got {type(values).__name__} {values!r}")
        if not values:
            raise ParameterError(f"{source}: {name}: the list of values is empty")
    try:
        checked = _model(parameters, strict=True, lists=True, names=list(data))(**data)
    except ValidationError as exc:
        details = []
        for item in exc.errors():
            name, *rest = item["loc"]
            position = f"[{rest[0]}]" if rest else ""
            details.append(
                f"{name}{position}: expected {_type_name(parameters[name][0])}, got "
                f"{type(item.get('input')).__name__} {item.get('input')!r}"
            )
        raise ParameterError(f"{source}: wrong value type: " + "; ".join(details)) from None
    values = {name: list(getattr(checked, name)) for name in data}
    for name, vals in values.items():
        if len({json.dumps(v, sort_keys=True) for v in vals}) != len(vals):
            raise ParameterError(f"{source}: {name}: a value is listed twice ({vals})")
    return Grid(values, source)


def load_grid(path: str | Path, source_of_parameters) -> Grid:
    """Read and validate grid.yaml (or .json)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParameterError(f"{path}: no such grid file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path}: not valid YAML: {exc}") from None
    return parse_grid(data, source_of_parameters, source=str(path))
