"""champion/challenger: deploy the sweep's winner only when it beats what the endpoint serves."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from components.base import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def champion(
    best_model: Input[Model],
    valid_data: Input[Dataset],
    results: list,
    target: str,
    endpoint_name: str,
    project: str,
    region: str,
    min_improvement: float,
    compare_rows: int,
    batch_size: int,
    report: Output[Markdown],
    metrics: Output[Metrics],
) -> str:
    """Measures the model the endpoint currently serves (the champion) through the endpoint, and
    the sweep's best model (the challenger) in process, on the same compare_rows clean validation
    rows. Returns "deploy" when there is no champion or when challenger RMSE ≤ champion RMSE −
    min_improvement, else "keep". The Markdown report records the decision, both RMSEs and the
    sweep's table; Metrics get challenger_rmse, champion_rmse and deploy (1/0)."""
    from trainer.pipeline_steps import run_champion

    return run_champion(
        best_model=best_model,
        valid_data=valid_data,
        results=results,
        target=target,
        endpoint_name=endpoint_name,
        project=project,
        region=region,
        min_improvement=min_improvement,
        compare_rows=compare_rows,
        batch_size=batch_size,
        report=report,
        metrics=metrics,
    )
