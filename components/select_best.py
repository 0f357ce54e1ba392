"""select best: the sweep's winner by validation RMSE."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Input, Markdown, Model, Output

from components.base import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def select_best(
    rmses: list,
    models: Input[list[Model]],
    trials: list,
    best_model: Output[Model],
    leaderboard: Output[Markdown],
    plot: Output[HTML],
) -> NamedTuple("SelectOutputs", [("best_index", int), ("best_rmse", float), ("results", list)]):
    """Picks the trained model with the lowest validation RMSE (a tie goes to the earlier set).

    The best_model artifact points at the winner's trainer output (its metadata carries the
    winning hyperparameters); the leaderboard is a Markdown table of every set and its RMSE, the
    plot an HTML page with RMSE against each swept parameter. Returns the winner's position, its
    RMSE and the table as a list of dicts.
    """
    from trainer.pipeline_steps import run_select_best

    return run_select_best(
        rmses=rmses, models=models, trials=trials, best_model=best_model, leaderboard=leaderboard, plot=plot
    )
