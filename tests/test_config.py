"""Configuration validation: every bad value fails with a message naming it and its source."""

from __future__ import annotations

import pytest

from trainer import config, storage
from trainer.config import ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in ("PROJECT", "REGION", "BUCKET", "TAXIFARE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for field in Settings.model_fields:
        monkeypatch.delenv(f"TAXIFARE_{field.upper()}", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("name", ["taxifare-ml", "my_bucket.v2", "abc", "a" * 63, "example.com.taxi-data"])
def test_valid_bucket_names(name):
    assert storage.check_bucket_name(name) == name


@pytest.mark.parametrize(
    "name, expected",
    [
        ("gs://taxifare-ml", "without gs://"),
        ("ab", "3-63 characters"),
        ("Taxifare", "only lowercase letters"),
        ("-taxifare", "starting and ending with a letter or digit"),
        ("taxifare-", "starting and ending with a letter or digit"),
        ("taxi fare", "only lowercase letters"),
        ("a" * 64, "longer than 63"),
        ("a." + "b" * 64, "each dot-separated part"),
        ("192.168.5.4", "IP address"),
        ("goog-data", "goog"),
        ("my-g00gle-data", "look-alike"),
    ],
)
def test_bad_bucket_names(name, expected):
    with pytest.raises(ValueError, match=expected):
        storage.check_bucket_name(name)


@pytest.mark.parametrize("region", ["us-central1", "europe-west4", "northamerica-northeast1", "asia-southeast2"])
def test_valid_regions(region):
    assert Settings(region=region).region == region


@pytest.mark.parametrize("region", ["us-central", "US-CENTRAL1", "uscentral1", "us-central1-a", ""])
def test_bad_regions(region):
    with pytest.raises(ValueError, match="expected a Google Cloud region"):
        Settings(region=region)


@pytest.mark.parametrize(
    "project, ok",
    [
        ("my-project-123", True),
        ("example.com:taxi-ml", True),
        ("abcdef", True),
        ("abc", False),
        ("1project", False),
        ("my_project", False),
        ("project-", False),
        ("a" * 31, False),
    ],
)
def test_project_ids(project, ok):
    if ok:
        assert Settings(project=project).project == project
    else:
        with pytest.raises(ValueError, match="project id is 6-30 characters"):
            Settings(project=project)


@pytest.mark.parametrize(
    "email, ok",
    [
        ("taxifare-pipelines@my-project.iam.gserviceaccount.com", True),
        ("123456789012-compute@developer.gserviceaccount.com", True),
        ("service-123456789012@gcp-sa-aiplatform.iam.gserviceaccount.com", True),
        ("someone@example.com", False),
        ("taxifare-pipelines", False),
        ("Taxi@my-project.iam.gserviceaccount.com", False),
    ],
)
def test_service_accounts(email, ok):
    if ok:
        assert Settings(service_account=email).service_account == email
    else:
        with pytest.raises(ValueError, match="expected a service account email"):
            Settings(service_account=email)


@pytest.mark.parametrize(
    "image, ok",
    [
        ("taxifare-pipelines:local", True),
        ("us-central1-docker.pkg.dev/my-project/taxifare/taxifare-pipelines:1.2.0", True),
        ("localhost:5000/taxifare", True),
        ("gcr.io/my-project/taxifare@sha256:" + "a" * 64, True),
        ("Taxifare:latest", False),
        ("taxifare:", False),
        ("gcr.io/p/taxifare@sha256:short", False),
        ("taxi fare", False),
    ],
)
def test_image_references(image, ok):
    if ok:
        assert Settings(image=image).image == image
    else:
        with pytest.raises(ValueError, match="expected an image reference"):
            Settings(image=image)


def test_sources_and_precedence(tmp_path, monkeypatch):
    (tmp_path / "taxifare.yaml").write_text("bucket: from-file\nregion: europe-west4\nproject: file-project\n")
    monkeypatch.setenv("BUCKET", "from-env")
    settings = load_settings(project="override-project")
    assert (settings.bucket, settings.region, settings.project) == ("from-env", "europe-west4", "override-project")
    rows = {name: (value, source) for name, value, source in config.describe(settings)}
    assert rows["bucket"] == ("from-env", "$BUCKET")
    assert rows["region"] == ("europe-west4", "taxifare.yaml")
    assert rows["image"] == (config.DEFAULT_IMAGE, "default")
    assert rows["pipeline_root"] == ("gs://from-env/taxifare/pipeline_root", "derived")


def test_errors_name_every_bad_value_and_its_source(tmp_path, monkeypatch):
    (tmp_path / "taxifare.yaml").write_text("region: us-central\nbuckett: typo\n")
    monkeypatch.setenv("BUCKET", "gs://taxi")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "region 'us-central': expected a Google Cloud region" in message
    assert "[from taxifare.yaml]" in message
    assert "bucket 'gs://taxi': give the bucket name without gs://" in message
    assert "[from $BUCKET]" in message
    assert "unknown setting 'buckett'" in message and "valid: project, region, bucket" in message


def test_missing_explicit_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
