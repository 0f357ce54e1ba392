"""Processes started before their work is known (trainer.warm): the next deploy hands a warm server
its model, validate's smoke run hands a warm trainer its run; one that nobody takes is stopped or leaves."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest
import requests

from trainer import local_endpoint, schema, server, validate_smoke, warm
from trainer.validate_result import SmokeResult


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TAXIFARE_STATE_DIR", str(tmp_path / "state"))
    yield tmp_path / "state"
    local_endpoint.stop("standby-test")
    local_endpoint.stop_standby()


def _wait(condition, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _gone(pid: int) -> bool:
    return not server.pid_alive(pid)


@pytest.mark.slow
def test_a_deploy_takes_the_standby_and_serves(state_dir, lab_model_dir):
    standby = local_endpoint.prestart()
    _wait(standby.ready)
    endpoint = local_endpoint.deploy(str(lab_model_dir), "standby-test")
    assert endpoint.pid == standby.pid and endpoint.log_path == standby.log_path
    answer = requests.post(endpoint.predict_url, json={"instances": [schema.LAB_TEST_INSTANCE]}, timeout=30)
    assert answer.status_code == 200 and answer.json()["predictions"][0]["fare_amount"] > 2.5
    assert not (warm.registry() / "server.json").exists()
    assert local_endpoint.stop_standby() is False  # taken: nothing left to stop

    # The next deploy (no standby) starts its own process, as before.
    replaced = local_endpoint.deploy(str(lab_model_dir), "standby-test")
    assert replaced.pid != standby.pid and _gone(standby.pid)


def test_an_unused_standby_is_stopped(state_dir):
    standby = local_endpoint.prestart()
    assert local_endpoint.stop_standby() is True
    assert _gone(standby.pid)
    assert local_endpoint.stop_standby() is False


@pytest.mark.slow
def test_a_standby_for_another_serving_environment_is_not_used(state_dir, lab_model_dir, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")
    standby = local_endpoint.prestart()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:2")
    endpoint = local_endpoint.deploy(str(lab_model_dir), "standby-test")
    assert endpoint.pid != standby.pid and _gone(standby.pid)


@pytest.mark.slow
def test_a_model_the_standby_cannot_load_fails_the_deploy_with_its_log(state_dir, tmp_path):
    standby = local_endpoint.prestart()
    with pytest.raises(
        local_endpoint.EndpointStartError, match="(?s)prediction server exited; log .*cannot load model"
    ):
        local_endpoint.deploy(str(tmp_path / "no-model"), "standby-test", timeout_s=90)
    _wait(lambda: _gone(standby.pid), 10)


@pytest.mark.slow
def test_a_standby_leaves_when_the_process_that_started_it_is_gone(tmp_path):
    folder = tmp_path / "standby"
    starter = (
        "import sys\nfrom trainer import warm\n"
        f"print(warm.start('server', {str(folder)!r}).pid, flush=True)\n"  # and exit at once
    )
    result = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, timeout=60, check=True)
    pid = int(result.stdout)
    _wait(lambda: (folder / warm.READY).exists() or _gone(pid))
    _wait(lambda: _gone(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10)
    assert "no work handed over; leaving" in (folder / warm.LOG).read_text()


@pytest.mark.slow
def test_the_smoke_run_in_a_warm_trainer_is_the_smoke_run_here(state_dir, lab_csvs, tmp_path, capsys):
    train, valid = lab_csvs
    here = validate_smoke.smoke_run(train, valid, tmp_path / "here", schema.LAB, steps=5)
    process = warm.prestart("trainer")
    there = validate_smoke.smoke_run(train, valid, tmp_path / "there", schema.LAB, steps=5)
    assert isinstance(there, SmokeResult) and _gone(process.pid)
    assert "step 5: loss" in capsys.readouterr().out  # the warm process's output, copied to this one's
    assert there.prediction == pytest.approx(here.prediction, rel=1e-4)
    assert (there.train_rows, there.valid_rows, there.steps) == (here.train_rows, here.valid_rows, 5)
    assert warm.stop_unused("trainer") is False


@pytest.mark.slow
def test_an_error_in_the_warm_trainer_is_raised_here_with_its_type(state_dir, tmp_path):
    warm.prestart("trainer")
    missing = tmp_path / "no-such.csv"
    with pytest.raises(FileNotFoundError, match="no-such.csv"):
        validate_smoke.smoke_run(missing, missing, tmp_path / "out", schema.LAB, steps=2)


def test_a_warm_trainer_for_another_tensorflow_setting_is_not_used(state_dir, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    process = warm.prestart("trainer")
    monkeypatch.delenv("TF_CONFIG")
    assert warm.claim("trainer") is None
    _wait(lambda: _gone(process.pid), 15)


def test_another_process_stops_a_server_that_is_not_its_child_promptly(tmp_path):
    """A warm server is the run's child; the deploy task that replaces it is another process. It
    exits at once on SIGTERM, and stays a zombie until the run reaps it: that counts as stopped."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        stopper = (
            "import time; from trainer import server; t = time.monotonic(); "
            f"print(server.stop_server({child.pid}, timeout_s=20), round(time.monotonic() - t, 2))"
        )
        result = subprocess.run([sys.executable, "-c", stopper], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        code, seconds = result.stdout.split()
        assert code == "None" and float(seconds) < 5, result.stdout  # not the 20 s timeout
        assert child.wait(5) == -15  # reaped here, by its parent: it ended on SIGTERM
    finally:
        child.kill()
        child.wait()
