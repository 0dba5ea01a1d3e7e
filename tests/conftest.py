"""Root of the test suite: real services (scripts/services) and per-test clean state."""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.database",
    "tests.fixtures.app",
    "tests.fixtures.engine",
]
