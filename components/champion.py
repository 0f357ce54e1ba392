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
    code_fingerprint: str = "",
) -> str:
    """Measures the model the endpoint currently serves (the champion) through the endpoint, and
    the sweep's best model (the challenger) in process, on the same compare_rows clean validation
    rows. Returns "deploy" when there is no champion or when challenger RMSE ≤ champion RMSE −
    min_improvement, else "keep". The Markdown report records the decision, both RMSEs and the
    sweep's table; Metrics get challenger_rmse, champion_rmse and deploy (1/0)."""
    import logging
    import tempfile
    from pathlib import Path

    from components.artifacts import local_path, step_log, write_metrics_file, write_text
    from trainer import client, endpoints, hparams, schema, selection, sweep_report

    with step_log("champion") as facts:
        endpoints.require(target, [endpoints.CHAMPION])
        if compare_rows < 1:
            raise ValueError(f"compare_rows must be >= 1, got {compare_rows}")
        layout = schema.get_layout(valid_data.metadata["layout"])
        with tempfile.TemporaryDirectory(prefix="taxifare-champion-") as workdir:
            rows = local_path(valid_data, Path(workdir) / "valid")
            sample = client.sample_validation_rows(rows, layout, compare_rows)
            if not sample.instances:
                raise ValueError(f"no clean validation rows in {valid_data.uri} to compare the models on")
            model_dir = local_path(best_model, Path(workdir) / "model")
            challenger_rmse = selection.model_rmse(model_dir, sample.instances, sample.labels)
        measured = selection.measure_champion(
            target=target,
            endpoint_name=endpoint_name,
            instances=sample.instances,
            labels=sample.labels,
            project=project,
            region=region,
            batch_size=batch_size,
        )
        decision = selection.decide(challenger_rmse, measured.rmse, min_improvement)
        best_index = int(best_model.metadata.get("trial", 0))
        # numbers come back from the orchestrator as JSON numbers (64.0): the sets' own types again
        trial_results = [
            selection.TrialResult(
                index=int(row["index"]),
                params=hparams.parse_sets([{k: row[k] for k in hparams.NAMES if k in row}])[0],
                rmse=row.get("rmse"),
                run=row.get("model", ""),
            )
            for row in results
        ]
        challenger = next((r for r in trial_results if r.index == best_index), None) or selection.TrialResult(
            index=best_index, params={}, rmse=best_model.metadata.get("rmse"), run=best_model.uri
        )
        challenger.run = best_model.uri
        write_text(
            report,
            sweep_report.decision_markdown(
                decision,
                champion=measured,
                challenger=challenger,
                compared_rows=len(sample.instances),
                results=trial_results,
                endpoint_name=endpoint_name,
            ),
        )
        metrics.log_metric("challenger_rmse", decision.challenger_rmse)
        if decision.champion_rmse is not None:
            metrics.log_metric("champion_rmse", decision.champion_rmse)
        metrics.log_metric("deploy", 1 if decision.deploy else 0)
        write_metrics_file(metrics)
        report.metadata.update(decision.as_dict())
        logging.getLogger(__name__).info("champion/challenger: %s", decision.reason)
        facts.update(**decision.as_dict(), compared_rows=len(sample.instances), champion=measured.description)
    return decision.verdict
