"""A new user's first run (issue 14's figures): `make run` with no cache next to the standalone trainer
on the same rows and steps, the lines that run prints, and `import tensorflow` with the venv as
installed against the same import once `compileall` has run over the venv.

Everything is measured from the outside, as a user meets it, in one bench run on this machine:

1. ``taxifare run --no-cache --workdir <fresh dir> --json <summary>`` as a subprocess (the embedded
   default data, the pipeline's defaults): wall time, exit code and the lines it printed (stdout and
   stderr together). Then ``python -m trainer.task`` on that run's clean CSVs (the validate task's
   ``clean_train``/``clean_valid`` under ``<run_dir>/validate/``) with every hyperparameter at the
   pipeline's default (``trainer.hparams.trainer_argv``): the same rows and steps. Quick mode passes
   ``-p train_steps=200`` to the run and ``--train_steps 200`` to the trainer.
2. ``python -c "import tensorflow"`` in a fresh process (median of ``bytecode.IMPORT_REPEATS``), then
   ``python -m compileall -q -j 0 <site-packages>``, then the import again. The .pyc files are
   listed before and after (path, mtime, inode, size) to count what compileall wrote; none is deleted.
   This runs last in the section (and the section last in the bench) so that everything before it is
   measured on the venv exactly as it was installed.

Every subprocess runs with ``PYTHONDONTWRITEBYTECODE=1``, as on these machines and in the image.
The 1-minute load average is kept before and after each phase: on a shared machine it tells a slow
phase from a busy machine (when compileall wrote nothing, the two imports ran on the same bytecode).
The image's own venv is not measured here (its build checks its bytecode with `pipelines.doctor`).
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

from pipelines.bench.bytecode import measure_bytecode, output_lines, shown, timed_run
from pipelines.bench.report import REPO_ROOT, Row, load_average, number

log = logging.getLogger("pipelines.bench.first_run")

TARGET_RUN_OVER_TRAINER = 2.0
TARGET_LINES = 40
TARGET_IMPORT_RATIO = 1.2
RUN_TIMEOUT_S = 3600
OUTPUT_KEPT_LINES = 200  # of the run's output, in the figures (all of it goes to first_run_output.txt)
DETAILS_OUTPUT_LINES = 60


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------
def _count_rows(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def measure_run(workdir: Path, params: dict, out: Path | None) -> dict:
    """`taxifare run --no-cache` in a fresh work dir, as a user runs it."""
    bindir = Path(sys.executable).parent
    summary_path = workdir / "summary.json"
    argv = [
        str(bindir / "taxifare"),
        "run",
        "--no-cache",
        "--workdir",
        str(workdir / "run"),
        "--json",
        str(summary_path),
    ]
    for name, value in params.items():
        argv += ["-p", f"{name}={value}"]
    load_before = load_average()[0]
    wall, code, output = timed_run(argv, cwd=REPO_ROOT, timeout=RUN_TIMEOUT_S)
    lines = output_lines(output)
    if out is not None:
        (out / "first_run_output.txt").write_text(output)
    log.info("taxifare run --no-cache: %.1f s, exit %d, %d lines", wall, code, len(lines))
    figures: dict = {
        "command": shlex.join(shown(a) if a.startswith(str(REPO_ROOT)) else a for a in argv),
        "wall_s": round(wall, 2),
        "exit_code": code,
        "lines": len(lines),
        "output": lines[:OUTPUT_KEPT_LINES],
        "load_1min": [load_before, load_average()[0]],
    }
    if code != 0 or not summary_path.exists():
        return figures
    summary = json.loads(summary_path.read_text())
    run_dir = Path(summary["run_dir"])
    clean = {name: run_dir / "validate" / f"clean_{name}" for name in ("train", "valid")}
    figures.update(
        summary_wall_s=summary["wall_s"],
        steps={name: step["wall_s"] for name, step in summary["steps"].items()},
        inside={name: {k: step.get(k) for k in ("startup_s", "in_step_s")} for name, step in summary["steps"].items()},
        smoke_s=summary["facts"].get("validate", {}).get("smoke_s"),
        train_rmse=summary["facts"].get("train", {}).get("rmse"),
        predict_rmse=summary.get("predict_rmse"),
        run_dir=str(run_dir),
        clean_train=str(clean["train"]),
        clean_valid=str(clean["valid"]),
    )
    missing = [str(p) for p in clean.values() if not p.is_file()]
    if missing:
        raise RuntimeError(f"the run's clean CSVs are not where expected: {', '.join(missing)}")
    figures.update(clean_train_rows=_count_rows(clean["train"]), clean_valid_rows=_count_rows(clean["valid"]))
    return figures


def measure_trainer(workdir: Path, train_csv: str, valid_csv: str, params: dict) -> dict:
    """`python -m trainer.task` on the run's clean rows with every hyperparameter at its default."""
    from trainer import hparams

    hyper = {name: value for name, value in params.items() if name in hparams.NAMES}
    output_dir = workdir / "trainer"
    argv = [
        sys.executable,
        "-m",
        "trainer.task",
        "--train_data_paths",
        train_csv,
        "--eval_data_paths",
        valid_csv,
        "--output_dir",
        str(output_dir),
        *hparams.trainer_argv(hyper),
    ]
    load_before = load_average()[0]
    wall, code, output = timed_run(argv, cwd=REPO_ROOT, timeout=RUN_TIMEOUT_S)
    log.info("python -m trainer.task: %.1f s, exit %d", wall, code)
    figures: dict = {
        "command": shlex.join(["python", *argv[1:]]),
        "wall_s": round(wall, 2),
        "exit_code": code,
        "lines": len(output_lines(output)),
        "hparams": hparams.trainer_argv(hyper),
        "load_1min": [load_before, load_average()[0]],
    }
    metrics_path = output_dir / "eval_metrics.json"
    if code != 0 or not metrics_path.exists():
        figures["output_tail"] = output_lines(output)[-20:]
        return figures
    metrics = json.loads(metrics_path.read_text())
    figures.update(
        rmse=metrics.get("rmse"),
        steps=metrics.get("steps"),
        train_rows=metrics.get("train_rows"),
        eval_rows=metrics.get("eval_rows"),
        in_process_s=metrics.get("seconds"),
        fit_s=metrics.get("train_seconds"),
    )
    return figures


def bench_first_run(workdir: Path, params: dict, out: Path | None = None) -> dict:
    """The section: the run and the trainer, then the import with and without compileall (last: it may
    write bytecode into the venv). `params` is {} for `make run`'s defaults, or the quick mode's steps."""
    workdir.mkdir(parents=True, exist_ok=True)
    run = measure_run(workdir, params, out)
    trainer = None
    if run["exit_code"] == 0 and "clean_train" in run:
        trainer = measure_trainer(workdir, run["clean_train"], run["clean_valid"], params)
    ratio = None
    if trainer and trainer["exit_code"] == 0:
        ratio = round(run["wall_s"] / trainer["wall_s"], 3)
    return {
        "params": params,
        "run": run,
        "trainer": trainer,
        "run_over_trainer": ratio,
        **measure_bytecode(),
        "targets": {
            "run_over_trainer": TARGET_RUN_OVER_TRAINER,
            "lines": TARGET_LINES,
            "import_ratio": TARGET_IMPORT_RATIO,
        },
    }


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------
def _met(value: float, target: float) -> str:
    return "met" if value <= target else "**not met**"


def _ratio_verdict(value: float | None, target: float) -> str:
    """``**2.32×** (target ≤ 2.0×): **not met**``"""
    if value is None:
        return "—"
    return f"**{value:.2f}×** (target ≤ {target:.1f}×): {_met(value, target)}"


def _quick(params: dict) -> str:
    return f" (quick: {' '.join(f'`-p {k}={v}`' for k, v in params.items())})" if params else ""


def report_rows(p: dict) -> list[Row]:
    """The summary-table rows of `taxifare bench`: run vs trainer, the lines printed, import vs compiled."""
    run, trainer, targets = p["run"], p.get("trainer"), p["targets"]
    rows = []
    if run["exit_code"] != 0:
        last = next((line.strip() for line in reversed(run["output"]) if line.strip()), "no output")
        rows.append(
            Row(
                "First run (`make run`, no cache)",
                f"`taxifare run --no-cache` **failed** (exit {run['exit_code']}) after {number(run['wall_s'], 1)} s"
                + _quick(p["params"]),
                f"last line: {last[:160]}",
                "**FAIL**",
            )
        )
    else:
        if trainer is None:
            compared, verdict = "standalone trainer not run: the run wrote no summary JSON", "—"
        elif trainer["exit_code"] != 0:
            compared, verdict = f"standalone trainer **failed** (exit {trainer['exit_code']})", "**FAIL**"
        else:
            compared = (
                f"standalone `python -m trainer.task`, same {number(trainer.get('train_rows'))} rows and "
                f"{number(trainer.get('steps'))} steps: {number(trainer['wall_s'], 1)} s"
            )
            verdict = _ratio_verdict(p["run_over_trainer"], targets["run_over_trainer"])
        rows.append(
            Row(
                "First run (`make run`, no cache)",
                f"`taxifare run --no-cache` **{number(run['wall_s'], 1)} s** wall, exit 0" + _quick(p["params"]),
                compared,
                verdict,
            )
        )
    rows.append(
        Row(
            "First run, output",
            f"**{run['lines']} lines** printed (stdout + stderr)",
            "",
            # The target is for a successful run; a failing one prints its error and the step's log tail.
            f"target ≤ {targets['lines']}: {_met(run['lines'], targets['lines'])}"
            if run["exit_code"] == 0
            else "— (failed run)",
        )
    )
    imp, comp = p["import_tensorflow"], p["compileall"]
    rows.append(
        Row(
            "`import tensorflow`, fresh process",
            f"venv as installed: median **{number(imp['before_median_s'], 2)} s** ({imp['repeats']} runs)",
            f"after `compileall` over site-packages: {number(imp['after_median_s'], 2)} s; "
            f"compileall wrote {number(comp['written'])} of {number(comp['pyc_after'])} .pyc files"
            + (" (nothing was left to compile)" if comp["written"] == 0 else ""),
            _ratio_verdict(imp["ratio"], targets["import_ratio"]),
        )
    )
    return rows


def report_details(p: dict) -> list[str]:
    """The commands, where the run's time went, every import time and the run's own output."""
    run, trainer, imp, comp = p["run"], p.get("trainer"), p["import_tensorflow"], p["compileall"]
    lines = ["## First run", "", f"- `{run['command']}`: {number(run['wall_s'], 1)} s, exit {run['exit_code']}"]
    if trainer:
        lines.append(f"- `{trainer['command']}`: {number(trainer['wall_s'], 1)} s, exit {trainer['exit_code']}")
    lines.append(
        f"- `{comp['command']}`: {number(comp['seconds'], 1)} s, exit {comp['exit_code']} "
        f"({comp['error_lines']} files it cannot compile); .pyc files {number(comp['pyc_before'])} → "
        f"{number(comp['pyc_after'])}, written {number(comp['written'])}"
        + (f" (e.g. {', '.join(comp['written_examples'][:3])})" if comp["written_examples"] else "")
    )
    lines.append(
        f"- `import tensorflow`: venv as installed {', '.join(number(s, 2) for s in imp['before_s'])} s; "
        f"after compileall {', '.join(number(s, 2) for s in imp['after_s'])} s"
    )
    loads = [
        f"{what} {' → '.join(number(x, 2) for x in load)}"
        for what, load in (
            ("run", run.get("load_1min")),
            ("trainer", (trainer or {}).get("load_1min")),
            ("imports before compileall", (imp.get("load_1min") or [])[:2]),
            ("after", (imp.get("load_1min") or [])[2:]),
        )
        if load
    ]
    if loads:
        lines.append(f"- load average (1 min) before → after: {'; '.join(loads)}")
    if "steps" in run:
        lines += ["", "| what | seconds |", "|---|---|"]
        lines.append(f"| `taxifare run` subprocess, wall | {number(run['wall_s'], 1)} |")
        lines.append(f"| the pipeline inside it (run summary's wall) | {number(run['summary_wall_s'], 1)} |")
        lines.append(
            f"| the CLI around it (start, emulator, stop) | {number(run['wall_s'] - run['summary_wall_s'], 1)} |"
        )
        inside = run.get("inside", {})
        for name, wall in run["steps"].items():
            parts = inside.get(name) or {}
            startup, body = parts.get("startup_s"), parts.get("in_step_s")
            detail = ""
            if startup is not None and body is not None:
                rest = wall - startup - body
                detail = (
                    f" (process start and imports {number(startup, 1)}, the step's own code {number(body, 1)}, "
                    f"orchestration and exit {number(rest, 1)})"
                )
            lines.append(f"| step {name}{detail} | {number(wall, 1)} |")
        if run.get("smoke_s") is not None:
            lines.append(
                f"| of validate: the smoke run (train, export, reload, predict) | {number(run['smoke_s'], 1)} |"
            )
        if trainer and trainer["exit_code"] == 0:
            lines.append(f"| standalone trainer, wall | {number(trainer['wall_s'], 1)} |")
            lines.append(f"| its `fit` (eval_metrics.json train_seconds) | {number(trainer.get('fit_s'), 1)} |")
            lines += [
                "",
                f"Same rows: the run's clean CSVs ({number(run.get('clean_train_rows'))} train, "
                f"{number(run.get('clean_valid_rows'))} valid rows); validation RMSE in the run's train step "
                f"{number(run.get('train_rmse'), 3)}, standalone {number(trainer.get('rmse'), 3)}.",
            ]
    shown = run["output"][:DETAILS_OUTPUT_LINES]
    more = run["lines"] - len(shown)
    lines += [
        "",
        f"What `taxifare run` printed ({run['lines']} lines; all of it in `first_run_output.txt`):",
        "",
        "```",
        *shown,
    ]
    if more > 0:
        lines.append(f"… {more} more lines")
    lines.append("```")
    return lines
