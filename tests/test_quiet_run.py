"""A local run's own process stays light: the CLI, the run's orchestration and the endpoint's
bookkeeping import no TensorFlow (nor aiplatform), so nothing it would print appears before the steps."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("tensorflow", "keras", "google.cloud.aiplatform", "matplotlib")


def test_the_run_parent_imports_no_tensorflow():
    code = (
        "import sys\n"
        "import pipelines.cli, pipelines.local.run, pipelines.local.page, trainer.local_endpoint, trainer.server\n"
        "from pipelines.taxifare import taxifare\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported by the run's parent: {result.stdout.strip()}"
    assert result.stderr == ""
