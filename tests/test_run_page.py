"""The run page and the runs index, built from real local runs and read in a real browser: Debian's
chromium and chromedriver, driven headless by selenium (`.ci/run` installs them)."""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from components import fingerprint
from pipelines import params as pipeline_params
from pipelines.local import page, run_record
from pipelines.local.run import RunError, code_fingerprints, graph_steps, run_local
from pipelines.taxifare import taxifare

STEPS = [name for name, _ in graph_steps(taxifare)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SMALL = {"train_steps": 20, "smoke_steps": 2, "source": "synthetic://?rows=2000&layout=lab&seed=1"}
MISSING = {**SMALL, "source": "/no/such/trips.csv"}
SETTINGS = ("bucket", "project", "region", "prefix")  # run_local gives these from the project's settings
SCREENSHOT = Path(tempfile.gettempdir()) / "taxifare-run-page.png"
ROOT = Path(__file__).resolve().parents[1]


# -- the browser --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    for needed, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not needed.exists():
            pytest.fail(f"{needed} is missing: apt-get install -y {package} (.ci/run installs it)")
    options = Options()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1400,1600",
    ):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def load(driver, url: str, allowed_origin: str = "") -> None:
    """Open `url`; fail on any console error or any request that leaves the page's own files."""
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not errors, f"console messages on {url}: {errors}"
    requested = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.append(message["params"]["request"]["url"])
    outside = [
        u
        for u in requested
        if urlparse(u).scheme not in ("file", "data", "about", "chrome")
        and not (allowed_origin and u.startswith(allowed_origin))
    ]
    assert not outside, f"the page fetched from outside its folder: {outside}"


def dag_states(driver) -> dict[str, str]:
    nodes = driver.find_elements(By.CSS_SELECTOR, ".dag svg g.node")
    assert all(node.is_displayed() for node in nodes)
    return {node.get_attribute("data-step"): node.get_attribute("data-state") for node in nodes}


def step_sections(driver) -> dict[str, str]:
    return {
        s.get_attribute("data-step"): s.get_attribute("data-state")
        for s in driver.find_elements(By.CSS_SELECTOR, "section.step")
    }


def new_run_dir(pipeline_root: Path, before: set[Path]) -> Path:
    (run_dir,) = set(pipeline_root.iterdir()) - before
    return run_dir


def run_folder_of(result, workdir: Path, artifacts_dir: Path) -> Path:
    """The run's own folder (WORKDIR/runs/<time>: its logs, its page), as run_local names it."""
    return getattr(result, "run_folder", None) or workdir / "runs" / artifacts_dir.name


def failed_run(workdir: Path, params: dict = MISSING) -> tuple[Path, dict]:
    """A real run that fails in ingest (the source does not exist), and the page run_local wrote from
    what the failure left: the error, the step log's records, the task's log in the run folder."""
    pipeline_root = workdir / "pipeline_root"
    pipeline_root.mkdir(parents=True, exist_ok=True)
    before = set(pipeline_root.iterdir())
    with pytest.raises(RunError, match="step ingest failed") as caught:
        run_local(workdir=workdir, params=params)
    artifacts_dir = new_run_dir(pipeline_root, before)
    run_folder = run_folder_of(caught.value, workdir, artifacts_dir)
    record = json.loads((run_folder / "run.json").read_text())
    assert record["artifacts_dir"] == str(artifacts_dir)
    return run_folder, record


# -- a failed run (fast: the run stops in its first step) -----------------------------------------
@pytest.fixture(scope="module")
def failed(tmp_path_factory):
    return tmp_path_factory.mktemp("failed-run")


def test_failed_run_page_shows_the_failed_step_its_error_and_log(browser, failed):
    run_dir, record = failed_run(failed)
    assert record["status"] == "failed" and record["failure"]["step"] == "ingest"
    assert "Traceback" in record["failure"]["log_tail"] or "Error" in record["failure"]["log_tail"]

    load(browser, (run_dir / "index.html").as_uri())
    assert browser.find_element(By.ID, "status").text.lower() == "failed"
    assert browser.find_element(By.ID, "failed-step").text == "ingest"
    failure = browser.find_element(By.ID, "failure")
    assert failure.is_displayed() and "/no/such/trips.csv" in failure.text
    tail = failure.find_element(By.CSS_SELECTOR, "pre.log-tail").text
    assert tail.strip() and tail.strip().splitlines()[-1] in (run_dir / "logs" / "ingest.log").read_text()
    assert dag_states(browser) == {"ingest": "failed", **dict.fromkeys(STEPS[1:], "not run")}
    assert step_sections(browser)["ingest"] == "failed"
    assert browser.find_elements(By.ID, "rmse") == []

    browser.find_element(By.CSS_SELECTOR, "#step-ingest a.log").click()
    assert browser.current_url.endswith("/logs/ingest.log")
    assert "/no/such/trips.csv" in browser.find_element(By.TAG_NAME, "body").text


def test_the_page_lists_every_parameter_the_run_got_defaults_marked(browser, tmp_path):
    declared = pipeline_params.parameters_of(taxifare)
    run_dir, record = failed_run(tmp_path, {**MISSING, "train_steps": 7})
    assert set(record["params"]) == set(declared)
    assert record["params"]["train_steps"] == 7 and "train_steps" not in record["defaults"]
    assert record["params"]["hidden_units"] == declared["hidden_units"][1] and "hidden_units" in record["defaults"]
    assert set(record["defaults"]) == {n for n in declared if n not in {*MISSING, "train_steps", *SETTINGS}}

    load(browser, (run_dir / "index.html").as_uri())
    shown = {
        row.find_element(By.CSS_SELECTOR, "td:first-child").text: (
            row.find_element(By.CSS_SELECTOR, "td:nth-child(2)").text,
            row.find_element(By.CSS_SELECTOR, "td:nth-child(3)").text,
        )
        for row in browser.find_elements(By.CSS_SELECTOR, "#params tr")
    }
    assert set(shown) == set(declared)
    assert shown["train_steps"] == ("7", "given")
    assert shown["hidden_units"] == (declared["hidden_units"][1], "default")
    assert {name for name, (_, how) in shown.items() if how == "default"} == set(record["defaults"])

    # The index compares runs on every parameter: a default that differs from a given value is marked.
    run_dir_2, _ = failed_run(tmp_path, {**MISSING, "hidden_units": "16 8"})
    load(browser, page.write_index(tmp_path / "runs").as_uri())
    compare = browser.find_element(By.ID, "compare")
    differs = {tr.find_element(By.TAG_NAME, "td").text for tr in compare.find_elements(By.CSS_SELECTOR, "tr.differs")}
    assert {"train_steps", "hidden_units"} <= differs and "learning_rate" not in differs
    first_row = browser.find_element(By.CSS_SELECTOR, f'table.runs tr[data-run="{run_dir_2.name}"]')
    assert "hidden_units=16 8" in first_row.text and "at their default" in first_row.text


def test_what_a_run_reports_is_shown_as_text_never_run_as_markup(browser, tmp_path):
    hostile = '<img src="x" onerror="document.title=\'owned\'"><script>document.title="owned"</script>'
    record = run_record.record_from_failure(
        dag=graph_steps(taxifare),
        params={"source": hostile},
        step="validate",
        error=f"ValueError: {hostile}",
        log_tail=[hostile, "</pre>"],
        fingerprints=code_fingerprints(taxifare),
    )
    path = page.write_run_page(tmp_path / "runs" / "hostile", record)
    load(browser, path.as_uri())  # an <img src="x"> that ran would be a failed request and a console error
    assert browser.title != "owned" and not browser.find_elements(By.CSS_SELECTOR, "main img, main script")
    assert hostile in browser.find_element(By.ID, "failure").text
    assert hostile in browser.find_element(By.ID, "params").text
    assert dag_states(browser) == {
        "ingest": "cached",
        "validate": "failed",
        **dict.fromkeys(STEPS[2:], "not run"),
    }
    # each step's code fingerprint (its cache key's code part) is shown beside its cache hit
    fingerprints = fingerprint.step_fingerprints()
    for name in ("ingest", "validate"):
        head = browser.find_element(By.CSS_SELECTOR, f"#step-{name} .step-head").text
        cache_hit = "cache hit: yes" if name == "ingest" else "cache hit: no"
        assert f"{cache_hit} code {fingerprints[f'components.{name}']}" in " ".join(head.split()), head


@pytest.mark.timeout(300)
def test_taxifare_ui_serves_the_runs_on_loopback(browser, failed):
    if not list(failed.glob("runs/*/run.json")):
        failed_run(failed)
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "ui", "--runs", str(failed / "runs"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        line = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/\S*", line)
        assert match, line + (server.stderr.read() if server.poll() is not None else "")
        url = match.group(0)
        assert url.endswith("/runs/")
        origin = url.removesuffix("runs/")
        load(browser, origin, allowed_origin=origin)  # / sends to the runs index
        assert browser.current_url == url
        rows = browser.find_elements(By.CSS_SELECTOR, "table.runs tr[data-run]")
        assert len(rows) == len(list(failed.glob("runs/*/run.json"))) >= 1
        assert "failed (ingest)" in rows[0].text.lower()  # the pill is upper case by CSS
        rows[0].find_element(By.CSS_SELECTOR, "a").click()
        WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "failed-step"))
        assert browser.current_url.startswith(url) and browser.current_url.endswith("/index.html")
        assert browser.find_element(By.ID, "failed-step").text == "ingest"
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        # The task's log, through the server (relative link from the run's folder).
        browser.find_element(By.CSS_SELECTOR, "#step-ingest a.log").click()
        assert browser.current_url.startswith(url) and browser.current_url.endswith("/logs/ingest.log")
        assert "/no/such/trips.csv" in browser.find_element(By.TAG_NAME, "body").text
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- real successful runs (the whole pipeline, small) ---------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A first run and a second one with the same parameters (its first four steps come from the
    cache), in one work dir; each with its page in its run folder."""
    workdir = tmp_path_factory.mktemp("page-runs")
    pipeline_root = workdir / "pipeline_root"
    made = {}
    for name in ("first", "cached"):
        pipeline_root.mkdir(parents=True, exist_ok=True)
        before = set(pipeline_root.iterdir())
        summary = run_local(workdir=workdir, params=SMALL)
        assert summary.run_dir == new_run_dir(pipeline_root, before)
        run_folder = run_folder_of(summary, workdir, summary.run_dir)
        record = run_record.record_from_summary(summary)
        path = page.write_run_page(run_folder, record)
        made[name] = (summary, json.loads((run_folder / "run.json").read_text()), path)
    return workdir, made


@pytest.mark.slow
def test_run_page_of_a_real_run_in_the_browser(browser, runs):
    _, made = runs
    summary, record, path = made["first"]
    assert record["run"] == path.parent.name and record["artifacts_dir"] == str(summary.run_dir)
    load(browser, path.as_uri())

    assert browser.find_element(By.ID, "status").text.lower() == "succeeded"
    assert browser.find_element(By.ID, "rmse").text == f"{summary.predict_rmse:.3f}"
    assert dag_states(browser) == dict.fromkeys(STEPS, "succeeded")
    assert list(dag_states(browser)) == list(STEPS)
    assert step_sections(browser) == dict.fromkeys(STEPS, "succeeded")
    for step in STEPS:
        caption = browser.find_element(By.CSS_SELECTOR, f'g.node[data-step="{step}"] text.sub').text
        assert caption == f"succeeded · {summary.steps[step].wall_s:.1f} s"
    params = browser.find_element(By.ID, "params").text
    assert "train_steps 20" in params and SMALL["source"] in params

    train = browser.find_element(By.ID, "step-train")
    metrics = train.find_element(By.CSS_SELECTOR, 'details[data-artifact="metrics"] table.metrics').text
    assert "rmse " + f"{summary.facts['train']['rmse']:.4f}".rstrip("0").rstrip(".") in metrics
    board = train.find_element(By.CSS_SELECTOR, "code.tensorboard").text
    assert board == summary.facts["train"]["tensorboard"] and Path(board).is_dir()
    report = browser.find_element(By.CSS_SELECTOR, '#step-validate details[data-artifact="report"] .md')
    assert report.find_element(By.TAG_NAME, "h1").text == "Data validation"
    assert report.find_elements(By.TAG_NAME, "table"), "the Markdown tables are rendered as tables"

    frame = train.find_element(By.CSS_SELECTOR, 'details[data-artifact="evaluation"] iframe')
    browser.execute_script("arguments[0].scrollIntoView()", frame)
    browser.switch_to.frame(frame)
    try:
        assert browser.find_element(By.TAG_NAME, "h1").text.startswith("taxifare evaluation")
        widths = [img.get_property("naturalWidth") for img in browser.find_elements(By.TAG_NAME, "img")]
        assert len(widths) == 2 and all(w > 100 for w in widths), widths  # both plots decoded
    finally:
        browser.switch_to.default_content()

    browser.find_element(By.CSS_SELECTOR, 'g.node[data-step="predict"]').click()
    assert browser.current_url.endswith("#step-predict")
    assert "target" in browser.find_element(By.ID, "step-predict").get_attribute("class")

    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


@pytest.mark.slow
def test_cached_run_page_shows_cache_hits_and_the_reused_outputs(browser, runs):
    _, made = runs
    first, cached = made["first"][0], made["cached"][0]
    _, record, path = made["cached"]
    first_folder = made["first"][2].parent
    load(browser, path.as_uri())
    expected = {**dict.fromkeys(STEPS[:4], "cached"), "deploy": "succeeded", "predict": "succeeded"}
    assert dag_states(browser) == expected
    assert step_sections(browser) == expected
    assert browser.find_element(By.ID, "rmse").text == f"{cached.predict_rmse:.3f}"
    train = browser.find_element(By.ID, "step-train")
    assert "cache hit: yes" in train.text and first_folder.name in train.text
    assert f"code {first.steps['train'].code_fingerprint}" in train.text
    assert [s["from_run"] for s in record["steps"]] == [first_folder.name] * 4 + [None, None]
    assert "cache hit: no" in browser.find_element(By.ID, "step-deploy").text
    # The cached train step shows the first run's evaluation, from the first run's folder.
    assert train.find_elements(By.CSS_SELECTOR, 'details[data-artifact="evaluation"] iframe')
    assert train.find_element(By.CSS_SELECTOR, "code.tensorboard").text == first.facts["train"]["tensorboard"]


@pytest.mark.slow
def test_index_lists_runs_newest_first_and_compares_two(browser, runs):
    workdir, made = runs
    failed_dir, _ = failed_run(workdir)
    index = page.write_index(workdir / "runs")
    load(browser, index.as_uri())

    rows = browser.find_elements(By.CSS_SELECTOR, "table.runs tr[data-run]")
    names = [row.get_attribute("data-run") for row in rows]
    assert names == [failed_dir.name, made["cached"][2].parent.name, made["first"][2].parent.name]
    rmse = [row.find_element(By.CSS_SELECTOR, "td.rmse").text for row in rows]
    assert rmse == ["", f"{made['cached'][0].predict_rmse:.3f}", f"{made['first'][0].predict_rmse:.3f}"]
    assert SMALL["source"] in rows[1].text and MISSING["source"] in rows[0].text

    # The two newest are ticked: the failed run against the cached one, parameters that differ marked.
    compare = browser.find_element(By.ID, "compare")
    headers = [th.text for th in compare.find_elements(By.CSS_SELECTOR, "tr:first-child th")][1:]
    assert headers == names[:2]
    differs = {tr.find_element(By.TAG_NAME, "td").text for tr in compare.find_elements(By.CSS_SELECTOR, "tr.differs")}
    assert {"status", "source", "ingest"} <= differs and "train_steps" not in differs

    # Tick the two successful runs instead: their RMSEs side by side.
    rows[0].find_element(By.CSS_SELECTOR, "input.pick").click()
    rows[2].find_element(By.CSS_SELECTOR, "input.pick").click()
    headers = [th.text for th in compare.find_elements(By.CSS_SELECTOR, "tr:first-child th")][1:]
    assert headers == names[1:]
    rmse_row = compare.find_element(By.XPATH, ".//tr[td[1]='endpoint RMSE']").text
    assert f"{made['first'][0].predict_rmse:.4f}"[:5] in rmse_row
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
