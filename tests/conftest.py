"""Shared fixtures. Area fixtures live in tests/fixtures/<area>.py."""

pytest_plugins = [
    "tests.fixtures.data",
    "tests.fixtures.models",
    "tests.fixtures.gcs",
    "tests.fixtures.contract",
]
