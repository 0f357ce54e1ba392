"""Two trainer processes on loopback, one model: MultiWorkerMirroredStrategy from TF_CONFIG.

This is how a Vertex AI CustomJob with replica_count=2 runs the trainer (Vertex writes TF_CONFIG
into every replica); here the two workers are local processes talking gRPC on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipelines.local.emulator import free_port

STEPS = 30


@pytest.mark.slow
def test_two_workers_train_one_model(tmp_path):
    from trainer import synth

    train = synth.write_csv(tmp_path / "train.csv", rows=3000, layout="lab", seed=11)
    valid = synth.write_csv(tmp_path / "valid.csv", rows=600, layout="lab", seed=12)
    output_dir = tmp_path / "out"
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    argv = [
        sys.executable,
        "-m",
        "trainer.task",
        "--train_data_paths",
        str(train),
        "--eval_data_paths",
        str(valid),
        "--output_dir",
        str(output_dir),
        "--train_steps",
        str(STEPS),
        "--train_batch_size",
        "128",
        "--hidden_units",
        "16 8",
        "--seed",
        "3",
    ]
    workers = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            "CUDA_VISIBLE_DEVICES": "",
        }
        log = open(tmp_path / f"worker{index}.log", "w")
        workers.append((subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        codes = [process.wait(timeout=240) for process, _ in workers]
    finally:
        for process, log in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)

    for log in logs:
        assert "multi-worker training: 2 workers" in log, log[-2000:]
        # the collective spans both tasks: each worker joined the same two-task cluster
        assert "/job:worker/replica:0/task:1" in log and "/job:worker/replica:0/task:0" in log, log[-2000:]

    # one model: the chief (worker 0) exported it; the other worker wrote nothing there
    metrics = json.loads((output_dir / "eval_metrics.json").read_text())
    assert metrics["steps"] == STEPS
    assert metrics["rmse"] > 0 and metrics["export_dir"]
    exports = list((output_dir / "export" / "exporter").iterdir())
    assert len(exports) == 1 and (exports[0] / "saved_model.pb").is_file()
    from trainer import predictor, schema

    fares = predictor.Predictor.load(output_dir).predict([dict(schema.LAB_TEST_INSTANCE)])
    assert len(fares) == 1 and fares[0] == fares[0]  # a number, not NaN
