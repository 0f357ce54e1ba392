"""What kfp.local's orchestration costs per task, apart from the steps' own work.

Six chained no-op components — built like the project's (project image, no kfp install) — run
under the same runner as `make run`. Their wall time per task is the orchestration overhead:
dispatch, executor input/output, the task's Python process and the kfp executor. The real steps
add their own imports (google-cloud-storage, TensorFlow) and TensorFlow's exit on top of that;
`run_local`'s per-step `overhead_s` (wall minus time in the step function) includes those.
"""

import tempfile
import time

from kfp import dsl, local

from components.base import BASE_IMAGE

TASKS = 6


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def noop(value: int) -> int:
    """Returns its input: a task with no work of its own."""
    return value


@dsl.pipeline(name="orchestration-overhead")
def chain(value: int = 0) -> int:
    task = noop(value=value)
    for _ in range(TASKS - 1):
        task = noop(value=task.output)
    return task.output


def measure(repeats: int = 2) -> dict:
    """Per-task orchestration overhead in seconds (best of `repeats` runs of the chain)."""
    walls = []
    with tempfile.TemporaryDirectory(prefix="taxifare-overhead-") as root:
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root)
        for _ in range(repeats):
            started = time.perf_counter()
            chain(value=1)
            walls.append(time.perf_counter() - started)
    best = min(walls)
    return {"tasks": TASKS, "runs_s": [round(w, 3) for w in walls], "per_task_s": round(best / TASKS, 3)}


if __name__ == "__main__":
    print(measure())
