"""The console's tests reuse the DHIS2 tests' sandbox fixtures (for the playground's DHIS2 preview)."""

from tests.dhis2.conftest import demo, sandbox  # noqa: F401 (fixtures)
