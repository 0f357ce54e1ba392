"""check trials: validate the sweep's hyperparameter sets before anything trains."""

from kfp import dsl

from components.base import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def check_trials(trials: list, seed: int) -> list:
    """Checks every hyperparameter set of the sweep (hidden_units, learning_rate, batch_size,
    train_steps, optional seed) and fails with one line naming the set and the field when one is
    wrong. Returns the sets complete (defaults filled, `seed` where a set names none) with exact
    types, which the ParallelFor over trainings iterates."""
    from trainer.pipeline_steps import run_check_trials

    return run_check_trials(trials=trials, seed=seed)
