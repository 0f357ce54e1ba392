"""Security checks: loopback by default, no secrets in the repository, no known-vulnerable pins.

Also part of the security story, tested where the code lives (not repeated here): the request size
limit (tests/test_server.py, and the oversize requests of the fuzz run in
tests/test_reliability_endpoint.py) and the least-privilege setup script
(tests/test_setup_gcp.py::test_no_project_level_storage_role_is_ever_granted).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.reliability import REPO_ROOT, record

pytestmark = pytest.mark.reliability


# -- the server binds loopback unless told otherwise ---------------------------------------------
def _listening_addresses(popen: subprocess.Popen, timeout_s: float = 120.0) -> set[str]:
    process = psutil.Process(popen.pid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise AssertionError(f"taxifare serve exited with code {popen.returncode}")
        found = {c.laddr.ip for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"server pid {popen.pid} is not listening after {timeout_s:.0f} s")


def _serve(model_dir: Path, port_file: Path, *extra: str) -> subprocess.Popen:
    taxifare = Path(sys.executable).with_name("taxifare")
    command = [
        str(taxifare),
        "serve",
        "--model-dir",
        str(model_dir),
        "--port",
        "0",
        "--port-file",
        str(port_file),
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def test_server_binds_loopback_unless_told_otherwise(lab_model_dir, tmp_path):
    seen = {}
    for label, extra in [("default", ()), ("--host 0.0.0.0", ("--host", "0.0.0.0"))]:
        process = _serve(lab_model_dir, tmp_path / f"port-{len(seen)}", *extra)
        try:
            seen[label] = sorted(_listening_addresses(process))
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    record(
        "security_bind",
        "taxifare serve binds loopback unless told otherwise",
        passed=seen["default"] == ["127.0.0.1"] and seen["--host 0.0.0.0"] == ["0.0.0.0"],
        listening=seen,
    )
    assert seen["default"] == ["127.0.0.1"]
    assert seen["--host 0.0.0.0"] == ["0.0.0.0"]


# -- no credentials in the repository ------------------------------------------------------------
# Built from pieces so that this file does not match itself.
_BEGIN = "-----BEGIN "
SECRET_PATTERNS = {
    "private key block": re.compile(_BEGIN + r"(?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY" + "-----"),
    "service-account key JSON": re.compile(
        r'"type"\s*:\s*"service' + r'_account"[\s\S]{0,4000}?"private' + r'_key"\s*:\s*"[^"]{40,}'
    ),
    "Google API key": re.compile(r"AI" + r"za[0-9A-Za-z_\-]{35}"),
    "Google OAuth client secret": re.compile(r"GOC" + r"SPX-[0-9A-Za-z_\-]{28}"),
    "Google OAuth access token": re.compile(r"ya" + r"29\.[0-9A-Za-z_\-]{30,}"),
    "Google OAuth refresh token": re.compile(r"(?<![0-9A-Za-z])1//0[0-9A-Za-z_\-]{40,}"),
    "AWS access key id": re.compile(r"(?<![0-9A-Z])(?:AK" + r"IA|AS" + r"IA)[0-9A-Z]{16}(?![0-9A-Z])"),
    "GitHub token": re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{36}|github_" + r"pat_[A-Za-z0-9_]{60,})"),
    "Slack token": re.compile(r"xox[abposr]-[0-9A-Za-z\-]{10,}"),
    "Stripe-style secret key": re.compile(r"sk_" + r"live_[0-9A-Za-z]{20,}"),
    "assigned secret literal": re.compile(
        r"(?i)\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|password|passwd)\b"
        r"\s*[:=]\s*['\"][A-Za-z0-9/+_\-.]{20,}['\"]"
    ),
}
SECRET_FILE_NAMES = re.compile(r"(?:^|/)(?:id_(?:rsa|dsa|ecdsa|ed25519)|.*\.(?:p12|pfx|pem|key|keystore|jks)|\.env)$")


def find_secrets(name: str, data: bytes) -> list[str]:
    """What in one file looks like a credential: ["<file>: <kind> …"]."""
    found = []
    if SECRET_FILE_NAMES.search(name):
        found.append(f"{name}: a key or credentials file by its name")
    text = data.decode("utf-8", errors="replace")
    for kind, pattern in SECRET_PATTERNS.items():
        match = pattern.search(text)
        if match:
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{name}:{line}: {kind}")
    return found


def test_the_scanner_finds_planted_credentials():
    """The scanner itself must catch each kind (else a clean scan would prove nothing)."""
    key_body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7" * 3
    planted = {
        "a.txt": f"{_BEGIN}PRIVATE KEY-----\n{key_body}\n",
        "sa.json": json.dumps(
            {
                "type": "service" + "_account",
                "project_id": "p",
                "private" + "_key_id": "abc",
                "private" + "_key": "-----" + key_body,
            }
        ),
        "c.py": "KEY = 'AI" + "za" + "SyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW'\n",
        "d.yaml": "token: ya" + "29.a0AfH6SMBx3kq-Zq9wLkVbT1mNnOoPpQqRrSsTt\n",
        "e.sh": "export AWS_ACCESS_KEY_ID=AK" + "IAIOSFODNN7EXAMPLE\n",
        "f.cfg": "pass" + "word = 'hunter2hunter2hunter2hunter2'\n",
        "keys/service.pem": "anything",
    }
    for name, content in planted.items():
        assert find_secrets(name, content.encode()), name
    assert find_secrets("ok.py", b"api_key = os.environ['API_KEY']\npassword: str = ''\n") == []


def test_no_credentials_or_keys_in_any_tracked_file():
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout.split(
        b"\0"
    )
    names = [n.decode() for n in listed if n]
    findings: list[str] = []
    scanned = scanned_bytes = 0
    for name in names:
        path = REPO_ROOT / name
        if not path.is_file():
            continue  # deleted in the work tree but still in the index
        data = path.read_bytes()
        scanned += 1
        scanned_bytes += len(data)
        findings.extend(find_secrets(name, data))
    record(
        "security_secrets",
        "No credentials or keys in the git-tracked files",
        passed=not findings and scanned > 50,
        files_scanned=scanned,
        bytes_scanned=scanned_bytes,
        patterns=len(SECRET_PATTERNS) + 1,
        findings=findings,
    )
    assert scanned > 50, f"only {scanned} tracked files found: is {REPO_ROOT} the repository?"
    assert not findings, findings


# -- known vulnerabilities in the pinned dependencies ----------------------------------------------
AUDIT_SERVICES = ("pypi", "osv")  # pip-audit's two vulnerability services, tried in this order


def _audit(audit: str, service: str, out: Path) -> tuple[dict | None, str]:
    """(pip-audit's JSON report, "") or (None, why the service gave no answer)."""
    command = [
        audit,
        "-s",
        service,
        "-r",
        str(REPO_ROOT / "requirements.lock"),
        "--no-deps",
        "--disable-pip",
        "--progress-spinner",
        "off",
        "-f",
        "json",
        "-o",
        str(out),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        return None, f"{service}: no answer in 240 s"
    if not out.is_file():
        last = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
        return None, f"{service}: pip-audit exit {done.returncode}: {last[0][:300]}"
    report = json.loads(out.read_text())
    packages = report["dependencies"]
    skipped = [p for p in packages if p.get("skip_reason")]
    if packages and len(skipped) == len(packages):
        return None, (
            f"{service}: every one of the {len(packages)} pinned packages was skipped "
            f"({skipped[0]['skip_reason']!r}), i.e. the service has no data for this machine"
        )
    return report, ""


@pytest.mark.network
def test_pip_audit_reports_nothing_unfixed_in_the_lockfile(tmp_path):
    """pip-audit over requirements.lock. A vulnerability service that cannot be reached fails the
    test with that reason: an audit that could not look is not a clean audit."""
    audit = shutil.which("pip-audit", path=str(Path(sys.executable).parent))
    assert audit, "pip-audit is not installed in the venv (it is a dev dependency: make install)"
    report, unreachable = None, []
    for service in AUDIT_SERVICES:
        report, why = _audit(audit, service, tmp_path / f"audit-{service}.json")
        if report is not None:
            break
        unreachable.append(why)
    if report is None:
        record(
            "security_pip_audit",
            "pip-audit over requirements.lock",
            passed=False,
            services_tried=list(AUDIT_SERVICES),
            unreachable=unreachable,
        )
        pytest.fail("no vulnerability service could be reached to audit requirements.lock: " + "; ".join(unreachable))
    packages = report["dependencies"]
    skipped = [p for p in packages if p.get("skip_reason")]
    vulnerable = [p for p in packages if p.get("vulns")]
    fixable = {
        f"{p['name']}=={p['version']}": {v["id"]: v.get("fix_versions", []) for v in p["vulns"]}
        for p in vulnerable
        if any(v.get("fix_versions") for v in p["vulns"])
    }
    no_fix = {
        f"{p['name']}=={p['version']}": [v["id"] for v in p["vulns"] if not v.get("fix_versions")]
        for p in vulnerable
        if any(not v.get("fix_versions") for v in p["vulns"])
    }
    record(
        "security_pip_audit",
        "pip-audit over requirements.lock",
        passed=not fixable and not no_fix and not skipped,
        service=service,
        unreachable=unreachable,
        packages_audited=len(packages) - len(skipped),
        packages_skipped=[f"{p['name']}: {p['skip_reason']}" for p in skipped],
        vulnerable_with_fix=fixable,
        vulnerable_without_fix=no_fix,
    )
    assert not skipped, f"pip-audit could not audit {[p['name'] for p in skipped]}"
    assert not fixable, f"pinned versions with known vulnerabilities and released fixes: {fixable}"
    assert not no_fix, f"pinned versions with known vulnerabilities and no fix released yet: {no_fix}"
