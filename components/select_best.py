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
    code_fingerprint: str = "",
) -> NamedTuple("SelectOutputs", [("best_index", int), ("best_rmse", float), ("results", list)]):
    """Picks the trained model with the lowest validation RMSE (a tie goes to the earlier set).

    The best_model artifact points at the winner's trainer output (its metadata carries the
    winning hyperparameters); the leaderboard is a Markdown table of every set and its RMSE, the
    plot an HTML page with RMSE against each swept parameter. Returns the winner's position, its
    RMSE and the table as a list of dicts.
    """
    import base64
    import math
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from components.artifacts import step_log, write_text
    from trainer import hparams, selection, sweep_report

    with step_log("select_best") as facts:
        if not (len(rmses) == len(models) == len(trials)):
            raise ValueError(
                f"collected {len(rmses)} RMSEs and {len(models)} models for {len(trials)} hyperparameter sets"
            )
        for position, (rmse, model) in enumerate(zip(rmses, models)):
            recorded = (model.metadata or {}).get("rmse")
            if recorded is not None and not math.isclose(float(recorded), float(rmse), rel_tol=1e-9, abs_tol=1e-9):
                raise ValueError(
                    f"collected outputs disagree at position {position}: RMSE {rmse} but model {model.uri} "
                    f"records {recorded}"
                )
        results = [
            selection.TrialResult(index=i, params=dict(trials[i]), rmse=float(rmses[i]), run=models[i].uri)
            for i in range(len(trials))
        ]
        best = selection.best_index([r.rmse for r in results])
        winner = models[best]
        best_model.uri = winner.uri
        best_model.metadata.update({**(winner.metadata or {}), "trial": best, **trials[best]})

        swept = [n for n in hparams.SWEPT_NAMES if len({str(t.get(n)) for t in trials}) > 1]
        write_text(
            leaderboard,
            "# taxifare sweep: validation RMSE per hyperparameter set\n\n"
            + sweep_report.results_markdown(results, list(hparams.SWEPT_NAMES))
            + f"\n\nBest: set {best} (RMSE {results[best].rmse:.4f}), model {winner.uri}\n",
        )
        with tempfile.TemporaryDirectory(prefix="taxifare-sweep-") as workdir:
            png = sweep_report.plot_rmse(results, Path(workdir) / "rmse.png", swept or list(hparams.SWEPT_NAMES))
            encoded = base64.b64encode(png.read_bytes()).decode()
        write_text(
            plot,
            "<html><body><h2>taxifare sweep: validation RMSE against each swept parameter</h2>"
            f'<img alt="RMSE per parameter" src="data:image/png;base64,{encoded}"></body></html>',
        )
        table = [{"index": r.index, **r.params, "rmse": r.rmse, "model": r.run} for r in results]
        facts.update(
            best_index=best, best_rmse=results[best].rmse, rmses=[r.rmse for r in results], best_model=winner.uri
        )
    outputs = namedtuple("SelectOutputs", ["best_index", "best_rmse", "results"])
    return outputs(best, results[best].rmse, table)
