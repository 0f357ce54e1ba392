"""Pieces of pipeline graph that both pipelines use: the data, train and serving steps, and the
hyperparameter docs their docstrings share."""

import functools

from components import fingerprint
from components.deploy import deploy
from components.export import export
from components.ingest import ingest
from components.predict import predict
from components.train import train
from components.validate import validate
from trainer import hparams


@functools.cache
def _fingerprints() -> dict[str, str]:
    """Each step's code fingerprint, computed once per process when the pipelines are defined."""
    return fingerprint.step_fingerprints()


def step(component, **inputs):
    """A task of `component` that also takes the fingerprint of the code it runs
    (components.fingerprint): its cache entry, kfp.local's or Vertex AI's, then holds only while
    that code is unchanged. Every task of the pipelines is made here."""
    return component(**inputs, code_fingerprint=_fingerprints()[component.python_func.__module__])


def with_hparam_docs(function):
    """Fill the ``{hparams}`` mark of a pipeline's docstring with the docs of the hyperparameters
    it takes (trainer.hparams), so the KFP UI shows the trainer's own words. Apply it below
    ``@dsl.pipeline``, which reads the docstring."""
    names = [name for name in hparams.NAMES if name in function.__code__.co_varnames]
    lines = [f"{name}: {doc}" for name, doc in hparams.docs(names).items()]
    defaults = ", ".join(f"{name} {value!r}" for name, value in hparams.DEFAULTS.items() if name != "seed")
    function.__doc__ = function.__doc__.replace("{hparams}", "\n        ".join(lines))
    function.__doc__ = function.__doc__.replace("{hparam_defaults}", defaults)
    return function


def train_step(*, validate_task, hyper: dict, **options):
    """train on the clean data; hyperparameters the pipeline does not take get the trainer's defaults."""
    return step(
        train,
        train_data=validate_task.outputs["clean_train"],
        valid_data=validate_task.outputs["clean_valid"],
        **{**hparams.DEFAULTS, **hyper},
        **options,
    ).set_display_name("train")


def data_steps(*, source, bucket, prefix, valid_source, valid_fraction, project, max_bad_fraction, smoke_steps):
    """ingest → validate; returns both tasks."""
    ingest_task = step(
        ingest,
        source=source,
        bucket=bucket,
        prefix=prefix,
        valid_source=valid_source,
        valid_fraction=valid_fraction,
        project=project,
    ).set_display_name("ingest to GCS")
    validate_task = step(
        validate,
        train_data=ingest_task.outputs["train_data"],
        valid_data=ingest_task.outputs["valid_data"],
        max_bad_fraction=max_bad_fraction,
        smoke_steps=smoke_steps,
    ).set_display_name("validate locally")
    return ingest_task, validate_task


def serving_steps(
    *,
    trained_model,
    validate_task,
    bucket,
    prefix,
    target,
    endpoint_name,
    project,
    region,
    instances_file,
    sample_size,
    predict_batch_size,
    **deploy_options,
):
    """export → deploy → predict for one trained model; returns the predict task."""
    export_task = step(
        export,
        trained_model=trained_model,
        train_data=validate_task.outputs["clean_train"],
        bucket=bucket,
        prefix=prefix,
    ).set_display_name("export model")
    # An endpoint is a live thing outside the pipeline: never reuse a cached deploy or predict.
    deploy_task = (
        step(
            deploy,
            exported_model=export_task.outputs["exported_model"],
            target=target,
            endpoint_name=endpoint_name,
            project=project,
            region=region,
            **deploy_options,
        )
        .set_display_name("deploy")
        .set_caching_options(False)
    )
    return (
        step(
            predict,
            endpoint=deploy_task.outputs["endpoint"],
            valid_data=validate_task.outputs["clean_valid"],
            instances_file=instances_file,
            sample_size=sample_size,
            batch_size=predict_batch_size,
        )
        .set_display_name("predict")
        .set_caching_options(False)
    )
