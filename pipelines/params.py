"""Pipeline parameters checked before anything is submitted.

A pydantic model is built from a pipeline's declared parameters — either the ``@dsl.pipeline``
function's signature or a compiled spec's ``root.inputDefinitions`` — and every value given on
the command line (``--param k=v``) or in a file is validated against it: an unknown name or a
value of the wrong type is an error that lists the valid parameters with their types.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

# KFP pipeline-spec parameter types → Python types.
_SPEC_TYPES: dict[str, type] = {
    "STRING": str,
    "NUMBER_INTEGER": int,
    "NUMBER_DOUBLE": float,
    "BOOLEAN": bool,
    "LIST": list,
    "STRUCT": dict,
}


class ParameterError(ValueError):
    """Pipeline parameters that do not match the pipeline's declaration."""


def _strict_config(name: str) -> ConfigDict:
    return ConfigDict(extra="forbid", title=f"{name} parameters")


def model_from_function(pipeline) -> type[BaseModel]:
    """A pydantic model of a ``@dsl.pipeline`` function's (or any function's) parameters."""
    func = getattr(pipeline, "pipeline_func", pipeline)
    name = getattr(pipeline, "name", None) or func.__name__
    fields: dict[str, tuple[Any, Any]] = {}
    for parameter in inspect.signature(func).parameters.values():
        annotation = parameter.annotation if parameter.annotation is not inspect.Parameter.empty else Any
        default = parameter.default if parameter.default is not inspect.Parameter.empty else ...
        fields[parameter.name] = (annotation, default)
    return create_model(f"{name}_parameters", __config__=_strict_config(name), **fields)


def load_spec(path: str | Path) -> dict:
    """A compiled pipeline spec (YAML or JSON) as a dict."""
    text = Path(path).read_text()
    documents = [doc for doc in yaml.safe_load_all(text) if doc]
    if not documents or "root" not in documents[0]:
        raise ParameterError(f"{path}: not a compiled KFP pipeline spec (no root)")
    return documents[0]


def model_from_spec(spec: Mapping | str | Path) -> type[BaseModel]:
    """A pydantic model of a compiled spec's root input parameters (artifact inputs are not parameters)."""
    if not isinstance(spec, Mapping):
        spec = load_spec(spec)
    name = spec.get("pipelineInfo", {}).get("name", "pipeline")
    parameters = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    fields: dict[str, tuple[Any, Any]] = {}
    for pname, definition in parameters.items():
        kind = definition.get("parameterType", "STRING")
        python_type = _SPEC_TYPES.get(kind)
        if python_type is None:
            raise ParameterError(f"parameter {pname!r}: unsupported parameterType {kind!r} in the spec")
        if "defaultValue" in definition:
            default = definition["defaultValue"]
            if python_type is int and isinstance(default, float) and default.is_integer():
                default = int(default)  # the spec stores integers as JSON numbers
        elif definition.get("isOptional"):
            default = None
            python_type = python_type | None
        else:
            default = ...
        fields[pname] = (python_type, default)
    return create_model(f"{name}_parameters", __config__=_strict_config(name), **fields)


def parameter_model(source) -> type[BaseModel]:
    """The parameter model of a pipeline function, a compiled spec dict, or a spec file path."""
    if isinstance(source, (str, Path, Mapping)):
        return model_from_spec(source)
    return model_from_function(source)


def describe(model: type[BaseModel]) -> str:
    """``name: type = default`` for every parameter, one per line."""
    lines = []
    for name, info in model.model_fields.items():
        annotation = getattr(info.annotation, "__name__", str(info.annotation))
        default = "required" if info.is_required() else f"= {info.default!r}"
        lines.append(f"{name}: {annotation} {default}")
    return "\n".join(lines)


def parse_assignments(assignments: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["k=v", …]`` → ``{"k": "v"}``; a malformed or repeated item is an error."""
    values: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParameterError(f"--param {item!r}: expected NAME=VALUE")
        if key in values:
            raise ParameterError(f"--param {key!r} given twice")
        values[key] = value
    return values


def _coerce_text(value: Any, annotation: Any) -> Any:
    """Lists and dicts given as text on the command line are JSON."""
    if isinstance(value, str) and annotation in (list, dict, list | None, dict | None):
        try:
            return json.loads(value)
        except ValueError:
            return value  # pydantic reports the type error with the parameter's name
    return value


def validate(source, values: Mapping[str, Any]) -> dict[str, Any]:
    """Checks ``values`` against the pipeline's parameters; returns them typed (only those given).

    Raises ParameterError listing every unknown name or bad value, and the valid parameters.
    """
    model = parameter_model(source)
    fields = model.model_fields
    given = {k: _coerce_text(v, fields[k].annotation) if k in fields else v for k, v in values.items()}
    try:
        checked = model.model_validate(given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"])
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown parameter {name!r}")
            elif error["type"] == "missing":
                problems.append(f"parameter {name!r} is required")
            else:
                problems.append(f"parameter {name!r}: {error['msg']} (got {error.get('input')!r})")
        raise ParameterError(
            "invalid pipeline parameters:\n  "
            + "\n  ".join(problems)
            + "\nvalid parameters:\n  "
            + describe(model).replace("\n", "\n  ")
        ) from None
    return {name: getattr(checked, name) for name in given}
