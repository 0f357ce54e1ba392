"""pipelines.cloud.image: the record `make image` / `make push` / `make kind-up` write, and the one
check that refuses a spec whose image was never published from this code (no Docker needed: the
digest is given, as docker would report it)."""

from __future__ import annotations

import json

import pytest
import yaml

from components.fingerprint import image_tag
from pipelines.cloud import image
from pipelines.compile import compile_pipeline

DIGEST = "sha256:" + "3" * 64


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = compile_pipeline("taxifare", tmp_path_factory.mktemp("compiled"))
    return yaml.safe_load(path.read_text())


def _make(event: str, record, name: str | None = None) -> None:
    """What the Makefile's `image`, `push` and kind-up.sh run after docker did its part."""
    argv = ["record", event, *([name] if name else []), "--digest", DIGEST, "--record", str(record)]
    assert image.main(argv) == 0


def test_the_spec_names_the_image_this_code_builds(spec, capsys):
    assert image.main(["name"]) == 0
    name = capsys.readouterr().out.strip()
    assert image.spec_images(spec) == {name} == {image.reference()}
    assert name.rsplit(":", 1)[1] == image_tag()  # the tag is the code's hash


def test_never_built_is_refused_naming_the_image(spec, tmp_path):
    record = tmp_path / "build" / "image.json"
    with pytest.raises(image.ImageError) as caught:
        image.check(spec, "vertex", record)
    message = str(caught.value)
    assert image.reference() in message and "never built or pushed" in message and "make push" in message
    assert "\n" not in message


def test_built_but_not_pushed_is_refused_then_accepted_once_pushed(spec, tmp_path):
    record = tmp_path / "image.json"
    _make("built", record)
    with pytest.raises(image.ImageError, match="was built but never pushed"):
        image.check(spec, "vertex", record)
    _make("pushed", record)
    image.check(spec, "vertex", record)
    entry = json.loads(record.read_text())["images"][image.reference()]
    assert set(entry) == {"built", "pushed"} and entry["pushed"]["digest"] == DIGEST


def test_kind_loaded_image_is_enough_for_kfp_not_for_vertex(spec, tmp_path):
    record = tmp_path / "image.json"
    _make("loaded", record)
    image.check(spec, "kfp", record)
    with pytest.raises(image.ImageError, match="never built or pushed"):
        image.check(spec, "vertex", record)


def test_an_image_of_other_code_does_not_count(spec, tmp_path):
    record = tmp_path / "image.json"
    repository = image.reference().rsplit(":", 1)[0]
    _make("pushed", record, f"{repository}:0123456789abcdef")  # pushed from another version
    with pytest.raises(image.ImageError, match=image.reference()):
        image.check(spec, "vertex", record)


def test_a_broken_record_is_one_line(tmp_path, spec):
    record = tmp_path / "image.json"
    record.write_text("{not json")
    with pytest.raises(image.ImageError, match="not a record of images") as caught:
        image.check(spec, "vertex", record)
    assert "\n" not in str(caught.value)


def test_compile_says_whether_the_image_it_names_was_built_or_pushed(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pipelines.cli import app

    monkeypatch.chdir(tmp_path)
    args = ["compile", "--pipeline", "taxifare", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"image: {image.reference()} — not built yet: make image, make push" in result.output
    _make("built", image.RECORD)
    _make("pushed", image.RECORD)
    result = CliRunner().invoke(app, args)
    assert f"image: {image.reference()} — built, pushed" in result.output
