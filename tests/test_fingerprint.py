"""components.fingerprint: what a step's cache key knows of its code, and the image tag."""

from __future__ import annotations

from pathlib import Path

import pytest

from components import fingerprint
from tests.fixtures.code import copy_of_the_code

REPO = Path(__file__).resolve().parents[1]

# A small project: two steps importing inside their functions (as components do), a chain of
# trainer modules, one module nobody imports and a module-level import only the spec uses.
TREE = {
    "requirements.lock": "kfp==2.17.3\n",
    "trainer/__init__.py": "",
    "trainer/reader.py": "from trainer import rules\n\n\ndef read():\n    return rules.RULES\n",
    "trainer/rules.py": "RULES = [1, 2]\n",
    "trainer/model.py": "def fit():\n    from .reader import read\n\n    return read()\n",
    "trainer/serve.py": "import json\n\n\ndef serve():\n    return json.dumps({})\n",
    "trainer/unused.py": "X = 1\n",
    "trainer/spec_only.py": "IMAGE = 'x'\n",
    "components/__init__.py": "",
    "components/helpers.py": "def helper():\n    return 1\n",
    "components/fit.py": (
        "from kfp import dsl\n\nfrom trainer.spec_only import IMAGE\n\n\n"
        "@dsl.component(base_image=IMAGE)\ndef fit(code_fingerprint: str = ''):\n"
        "    from components.helpers import helper\n    from trainer import model\n\n"
        "    return model.fit(), helper()\n"
    ),
    "components/serve.py": (
        "from kfp import dsl\n\n\n@dsl.component\ndef serve():\n"
        "    try:\n        import trainer.serve\n    except ImportError:\n        raise\n"
        "    return trainer.serve.serve()\n"
    ),
}


@pytest.fixture
def tree(tmp_path):
    for name, text in TREE.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def _after_edit(root: Path, name: str) -> dict[str, str]:
    with open(root / name, "a") as out:
        out.write("# edited\n")
    return fingerprint.step_fingerprints(root)


def test_steps_are_the_modules_with_a_component(tree):
    assert fingerprint.step_modules(tree) == ["components.fit", "components.serve"]


@pytest.mark.parametrize(
    "edited, changed",
    [
        ("trainer/rules.py", {"components.fit"}),  # imported by reader, imported by model (relative)
        ("trainer/model.py", {"components.fit"}),
        ("components/helpers.py", {"components.fit"}),
        ("trainer/serve.py", {"components.serve"}),  # `import trainer.serve` inside a try
        ("trainer/__init__.py", {"components.fit", "components.serve"}),  # both import the package
        ("components/serve.py", {"components.serve"}),  # the component's own source
        ("requirements.lock", {"components.fit", "components.serve"}),
        ("trainer/unused.py", set()),  # no step imports it
        ("trainer/spec_only.py", set()),  # imported at module level: shapes the spec, not the task
    ],
)
def test_an_edit_changes_exactly_the_steps_that_import_it(tree, edited, changed):
    before = fingerprint.step_fingerprints(tree)
    after = _after_edit(tree, edited)
    assert {module for module in before if before[module] != after[module]} == changed
    assert fingerprint.step_fingerprints(tree) == after  # the same code, the same fingerprints


def test_one_step_alone_equals_its_row_of_the_table(tree):
    assert fingerprint.step_fingerprint("components.fit", tree) == fingerprint.step_fingerprints(tree)["components.fit"]
    with pytest.raises(ValueError, match="components.nothing"):
        fingerprint.step_fingerprint("components.nothing", tree)


def test_every_step_of_the_project_has_its_own():
    # How long it takes is a figure of the bench (pipeline section), not of a unit test.
    table = fingerprint.step_fingerprints()
    assert {"components.ingest", "components.validate", "components.train", "components.export"} <= set(table)
    assert "components.artifacts" not in table and "components.base" not in table
    assert len(set(table.values())) == len(table)  # every step runs different code


def test_image_tag_follows_what_the_image_is_built_from(tmp_path):
    copy = copy_of_the_code(tmp_path / "repo")
    tag = fingerprint.image_tag(copy)
    assert tag == fingerprint.image_tag(REPO) == fingerprint.image_tag(copy)
    (copy / "README.md").write_text("docs are not in the tag\n")
    (copy / "tests").mkdir()
    (copy / "tests" / "test_x.py").write_text("x = 1\n")
    assert fingerprint.image_tag(copy) == tag
    for name in ("pipelines/bench/report.py", "container/entrypoint.sh", "requirements.lock"):
        with open(copy / name, "a") as out:
            out.write("\n")
        changed = fingerprint.image_tag(copy)
        assert changed != tag, name
        tag = changed


@pytest.mark.parametrize(
    "configured, repository",
    [
        ("taxifare-pipelines:local", "taxifare-pipelines"),
        ("taxifare-pipelines", "taxifare-pipelines"),
        ("localhost:5000/team/taxifare", "localhost:5000/team/taxifare"),
        (
            "us-central1-docker.pkg.dev/p/taxifare/taxifare-pipelines:2.1.0",
            "us-central1-docker.pkg.dev/p/taxifare/taxifare-pipelines",
        ),
        ("localhost:5000/taxifare:1@sha256:" + "a" * 64, "localhost:5000/taxifare"),
    ],
)
def test_image_reference_is_the_repository_tagged_with_the_code(configured, repository):
    assert fingerprint.image_reference(configured) == f"{repository}:{fingerprint.image_tag()}"
