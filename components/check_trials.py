"""check trials: refuse a sweep that cannot finish — a bad hyperparameter set or a serving target
that cannot do a step — before anything is copied or trained."""

from kfp import dsl

from components.base import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def check_trials(trials: list, seed: int, target: str, serving_steps: list, code_fingerprint: str = "") -> list:
    """Checks every hyperparameter set of the sweep (names and rules of trainer.hparams; omitted
    names take the trainer's defaults, `seed` where a set names none) and that the serving target
    can do every serving step the pipeline needs; fails with one line naming the set and the
    field, or the target and the step. Returns the sets complete with exact types, which the
    ParallelFor over trainings iterates."""
    import logging

    from components.artifacts import step_log
    from trainer import endpoints, hparams

    with step_log("check_trials") as facts:
        endpoints.require(target, serving_steps)
        checked = hparams.parse_sets(trials, seed=seed)
        logging.getLogger(__name__).info("%d hyperparameter sets: %s", len(checked), checked)
        facts.update(trials=len(checked))
    return checked
