"""The `taxifare_sweep` pipeline: one dataset, many trainings, the best one guarded by champion/challenger.

ingest → validate → check the hyperparameter sets → ParallelFor(train) → select the best by
validation RMSE → compare it with the model the endpoint serves → (only when it is better by
``min_improvement``) export → deploy → predict.
"""

from kfp import dsl

from components.champion import champion
from components.check_trials import check_trials
from components.select_best import select_best
from pipelines.graph import data_steps, serving_steps, step, train_step, with_hparam_docs
from pipelines.taxifare import DEFAULT_SOURCE
from trainer import endpoints, hparams
from trainer.schema import VALID_FRACTION

PIPELINE_NAME = "taxifare-sweep"
# What its serving target must be able to do: measure the champion, then deploy and predict.
SERVING_STEPS = (endpoints.CHAMPION, endpoints.DEPLOY, endpoints.PREDICT)

# Trainings run at most this many at a time (kfp.local runs two at a time whatever this says).
MAX_PARALLEL_TRAININGS = 4

DEFAULT_TRIALS = [
    {"hidden_units": "64 32", "learning_rate": 0.003, "batch_size": 512, "train_steps": 3000},
    {"hidden_units": "128 64 32", "learning_rate": 0.003, "batch_size": 512, "train_steps": 3000},
    {"hidden_units": "64 32", "learning_rate": 0.01, "batch_size": 256, "train_steps": 3000},
    {"hidden_units": "32 16", "learning_rate": 0.001, "batch_size": 1024, "train_steps": 3000},
    {"hidden_units": "64 32", "learning_rate": 0.003, "batch_size": 512, "train_steps": 3000, "embedding_dim": 8},
]


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Trains several taxifare models on one dataset and deploys the best one only if it beats the "
    "model the endpoint serves.",
)
@with_hparam_docs
def taxifare_sweep(
    project: str = "local-project",
    region: str = "us-central1",
    bucket: str = "taxifare-local",
    prefix: str = "taxifare",
    source: str = DEFAULT_SOURCE,
    valid_source: str = "",
    valid_fraction: float = VALID_FRACTION,
    max_bad_fraction: float = 0.05,
    smoke_steps: int = 10,
    trials: list = DEFAULT_TRIALS,
    seed: int = 42,
    min_improvement: float = 0.0,
    compare_rows: int = 2000,
    target: str = "local",
    endpoint_name: str = "taxifare",
    instances_file: str = "",
    sample_size: int = 200,
    predict_batch_size: int = 100,
) -> str:
    """Taxifare hyperparameter sweep with a champion/challenger guard on the endpoint.

    Steps:
        1. check hyperparameter sets — every set of `trials` is checked before anything runs.
        2. ingest — copy the source into gs://{bucket}/{prefix}/data/ as train/valid CSVs (once).
        3. validate — check every row, quarantine bad rows, smoke-train (once).
        4. train — one training per set, in parallel (ParallelFor); rmse/mae, HTML report each.
        5. select best — the lowest validation RMSE (Collected over the trainings); leaderboard
           (Markdown) and RMSE-per-parameter plot (HTML).
        6. champion/challenger — the endpoint's current model (through the endpoint) against the
           best one, on the same clean validation rows; Markdown report of the decision.
        7. only when the decision is "deploy": export → deploy → predict the winner.

    Args:
        project: Google Cloud project id (the lab's PROJECT).
        region: Region for Vertex AI and the bucket (the lab's REGION), e.g. us-central1.
        bucket: The one ML bucket the pipeline reads and writes (the lab's BUCKET), without gs://.
        prefix: Folder inside the bucket for this project's data and models.
        source: Where the trips come from: a local path or glob, https:// URL, gs:// URI,
            bq://project.dataset.table, bq://?query=…, or synthetic://?rows=N&layout=lab|dated&seed=S.
        valid_source: Optional separate validation source; empty to split `source` by key hash.
        valid_fraction: Share of `source` rows that go to validation when it is split.
        max_bad_fraction: Fail validation when more than this share of rows is malformed or implausible.
        smoke_steps: Training steps of the validation smoke run.
        trials: The hyperparameter sets to train, a list of dicts with keys hidden_units (e.g.
            "64 32"), learning_rate, batch_size, train_steps, the feature switches embedding_dim
            (learned grid-cell embeddings: 0 off, > 0 their size) and towers (averaged DNN heads),
            and optionally seed; omitted keys take the trainer's defaults ({hparam_defaults}).
        seed: Random seed of every set that does not name its own.
        min_improvement: Deploy the best model only when its RMSE is at least this much lower
            than the RMSE of the model the endpoint serves now (0: deploy when not worse).
            Without a served model the best one is deployed.
        compare_rows: Clean validation rows both models are measured on for the decision.
        target: Where the endpoint is: "local" (a server on this machine) or "vertex" (a kfp
            cluster Service records no model to measure as the champion, so kfp is refused).
        endpoint_name: Display name of the endpoint guarded by the champion/challenger decision.
        instances_file: JSON-lines file of instances to predict after a deploy; empty for a
            validation sample.
        sample_size: Validation rows sent to the endpoint after a deploy when instances_file is empty.
        predict_batch_size: Instances per prediction request (also for measuring the champion).

    Returns:
        The decision: "deploy" (the best model now serves) or "keep" (the champion still serves).
    """
    # A bad hyperparameter set fails the run before any data is copied or any model trained.
    trials_task = step(
        check_trials, trials=trials, seed=seed, target=target, serving_steps=list(SERVING_STEPS)
    ).set_display_name("check hyperparameter sets")

    ingest_task, validate_task = data_steps(
        source=source,
        bucket=bucket,
        prefix=prefix,
        valid_source=valid_source,
        valid_fraction=valid_fraction,
        project=project,
        max_bad_fraction=max_bad_fraction,
        smoke_steps=smoke_steps,
    )
    ingest_task.after(trials_task)

    with dsl.ParallelFor(trials_task.output, parallelism=MAX_PARALLEL_TRAININGS, name="trainings") as trial:
        train_task = train_step(
            validate_task=validate_task, hyper={name: getattr(trial, name) for name in hparams.NAMES}
        )

    select_task = step(
        select_best,
        rmses=dsl.Collected(train_task.outputs["rmse"]),
        models=dsl.Collected(train_task.outputs["model"]),
        trials=trials_task.output,
    ).set_display_name("select best")

    # What the endpoint serves changes outside the pipeline: never reuse a cached decision.
    champion_task = (
        step(
            champion,
            best_model=select_task.outputs["best_model"],
            valid_data=validate_task.outputs["clean_valid"],
            results=select_task.outputs["results"],
            target=target,
            endpoint_name=endpoint_name,
            project=project,
            region=region,
            min_improvement=min_improvement,
            compare_rows=compare_rows,
            batch_size=predict_batch_size,
        )
        .set_display_name("champion vs challenger")
        .set_caching_options(False)
    )

    with dsl.If(champion_task.outputs["Output"] == "deploy", name="challenger-wins"):
        serving_steps(
            trained_model=select_task.outputs["best_model"],
            validate_task=validate_task,
            bucket=bucket,
            prefix=prefix,
            target=target,
            endpoint_name=endpoint_name,
            project=project,
            region=region,
            instances_file=instances_file,
            sample_size=sample_size,
            predict_batch_size=predict_batch_size,
        )
    return champion_task.outputs["Output"]
