"""Compile the project's pipelines to KFP v2 pipeline-spec YAML."""

from __future__ import annotations

import importlib
from pathlib import Path

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


def compile_pipeline(name: str = "taxifare", out_dir: str | Path = DEFAULT_OUT_DIR) -> Path:
    """Write OUT_DIR/NAME.yaml. The output depends only on the code and config (same bytes twice)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.yaml"
    compiler.Compiler().compile(pipeline_func=pipeline_function(name), package_path=str(path))
    return path
