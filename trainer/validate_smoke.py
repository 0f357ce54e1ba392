"""The smoke run: a few training steps on a sample of the clean rows, then the export reloaded and asked for a fare."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from trainer import schema
from trainer.validate_result import SmokeResult, ValidationError

DEFAULT_SMOKE_ROWS = 2000


def _head(src: Path, dst: Path, rows: int) -> int:
    count = 0
    with open(src, "rb") as source, open(dst, "wb") as out:
        for line in source:
            if count >= rows:
                break
            out.write(line)
            count += 1
    return count


def smoke_run(
    clean_train: Path,
    clean_valid: Path,
    work_dir: Path,
    layout: schema.Layout,
    *,
    steps: int = 10,
    rows: int = DEFAULT_SMOKE_ROWS,
    batch_size: int = 64,
) -> SmokeResult:
    """Train ``steps`` steps on a sample, reload the export, predict the layout's test instance.

    In a warm ``trainer`` process when a local run started one (it has imported TensorFlow while
    the steps before went on; its output is copied here), else in this process."""
    from trainer import warm

    arguments = {
        "clean_train": str(clean_train),
        "clean_valid": str(clean_valid),
        "work_dir": str(work_dir),
        "layout": layout.name,
        "steps": steps,
        "rows": rows,
        "batch_size": batch_size,
    }
    ready = warm.claim("trainer")
    if ready is None:
        return smoke_in_this_process(**arguments)
    result, output = warm.call(ready, f"{__name__}:smoke_in_this_process", arguments)
    sys.stdout.write(output)
    sys.stdout.flush()
    return SmokeResult.model_validate(result)


def smoke_in_this_process(
    clean_train: str, clean_valid: str, work_dir: str, layout: str, *, steps: int, rows: int, batch_size: int
) -> SmokeResult:
    """The smoke run itself (``smoke_run``'s arguments, as JSON carries them)."""
    from trainer import predictor, task

    clean_train, clean_valid, work_dir = Path(clean_train), Path(clean_valid), Path(work_dir)
    layout = schema.get_layout(layout)
    started = time.perf_counter()
    work_dir.mkdir(parents=True, exist_ok=True)
    train_rows = _head(clean_train, work_dir / "train.csv", rows)
    valid_rows = _head(clean_valid, work_dir / "valid.csv", rows)
    output_dir = work_dir / "model"
    argv = [
        "--train_data_paths",
        str(work_dir / "train.csv"),
        "--eval_data_paths",
        str(work_dir / "valid.csv"),
        "--output_dir",
        str(output_dir),
        "--train_steps",
        str(steps),
        "--train_batch_size",
        str(batch_size),
        "--layout",
        layout.name,
        "--eval_steps",
        "1",
        # A few steps: compiling the training step into a graph would cost more than running them
        # (the same steps, the same losses; the export is traced and reloaded as in training).
        "--eager",
    ]
    code = task.main(argv)
    if code != 0:
        raise ValidationError(f"smoke run: the trainer exited with code {code} ({' '.join(argv)})")
    exporter = output_dir / "export" / "exporter"
    try:
        model_dir = predictor.find_saved_model(exporter)
        loaded = predictor.Predictor.load(model_dir)
    except (predictor.ModelNotFoundError, predictor.ModelLoadError) as exc:
        raise ValidationError(f"smoke run: no usable export under {exporter}: {exc}") from None
    instance = dict(schema.TEST_INSTANCES[layout.name])
    try:
        (fare,) = loaded.predict([instance])
    except predictor.InstanceError as exc:
        raise ValidationError(f"smoke run: the exported model rejects the test instance: {exc}") from None
    if not math.isfinite(fare):
        raise ValidationError(f"smoke run: the exported model predicts {fare} for {instance}")
    return SmokeResult(
        steps=steps,
        train_rows=train_rows,
        valid_rows=valid_rows,
        export_dir=str(model_dir),
        instance=instance,
        prediction=float(fare),
        seconds=round(time.perf_counter() - started, 3),
    )
