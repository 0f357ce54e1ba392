"""Compile the project's pipelines to KFP v2 pipeline-spec YAML."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kfp import compiler

# name → "module:function"; imported lazily so one broken pipeline does not hide the others.
PIPELINES = {
    "taxifare": "pipelines.taxifare:taxifare",
    "taxifare_sweep": "pipelines.taxifare_sweep:taxifare_sweep",
}

DEFAULT_OUT_DIR = Path("build/pipelines")


def pipeline_function(name: str):
    try:
        module_name, function_name = PIPELINES[name].split(":")
    except KeyError:
        raise ValueError(f"unknown pipeline {name!r}; expected one of {', '.join(PIPELINES)}") from None
    return getattr(importlib.import_module(module_name), function_name)


def _module(name: str):
    return importlib.import_module(pipeline_function(name).pipeline_func.__module__)


def registry_name(spec: Mapping) -> str:
    """The registry name of the pipeline a compiled spec was compiled from (its pipelineInfo name)."""
    compiled_as = spec.get("pipelineInfo", {}).get("name")
    for name in PIPELINES:
        if compiled_as == _module(name).PIPELINE_NAME:
            return name
    raise ValueError(f"the spec's pipeline {compiled_as!r} is none of {', '.join(PIPELINES)}")


def check_serving_target(pipeline: str | Mapping, values: Mapping[str, Any]) -> None:
    """Refuse a run whose serving target (``target``, given or the pipeline's default) cannot do
    every serving step the pipeline needs: before anything is submitted or trained, through the
    same dispatch (trainer.endpoints) the steps use."""
    from pipelines import params
    from trainer import endpoints

    name = pipeline if isinstance(pipeline, str) else registry_name(pipeline)
    target = values.get("target", params.parameters_of(pipeline_function(name))["target"][1])
    endpoints.require(target, _module(name).SERVING_STEPS)


def compile_pipeline(name: str = "taxifare", out_dir: str | Path = DEFAULT_OUT_DIR) -> Path:
    """Write OUT_DIR/NAME.yaml. The output depends only on the code and config (same bytes twice)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.yaml"
    compiler.Compiler().compile(pipeline_func=pipeline_function(name), package_path=str(path))
    return path
