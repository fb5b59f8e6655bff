"""The exception tree: every error class in it, one table row each, the docstring drawing true.

Plus what clients see of it: the API's answers and the command line's exit codes.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType
from typing import cast

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

import dhis2_sandbox
import dhis2_sandbox.errors
import gateway
import gateway.errors
from dhis2_sandbox.errors import SandboxError
from gateway.auth import ScopeError
from gateway.cli import app as cli_app
from gateway.delivery.queue import QueueUnavailable
from gateway.errors import (
    CLIENT_ERRORS,
    DISPOSITIONS,
    ConfigError,
    FhirError,
    GatewayError,
    RequestError,
    disposition,
    exit_code_for,
    outcome_for,
)
from gateway.search.query import SearchError
from gateway.settings import ConfigFileError
from gateway.store import VersionConflict
from tests.conftest import ApiHarness

SANDBOX = "dhis2_sandbox"


def _modules() -> list[ModuleType]:
    modules: list[ModuleType] = []
    for package in (gateway, dhis2_sandbox):
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue  # runs the command line when imported
            modules.append(importlib.import_module(info.name))
    return modules


def _exception_classes() -> list[type[BaseException]]:
    return [
        obj
        for module in _modules()
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == module.__name__
    ]


CLASSES = _exception_classes()
GATEWAY_CLASSES = [cls for cls in CLASSES if not cls.__module__.startswith(SANDBOX)]
SANDBOX_CLASSES = [cls for cls in CLASSES if cls.__module__.startswith(SANDBOX)]


def _name(cls: type[BaseException]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_the_walk_finds_the_errors_of_every_package() -> None:
    names = {cls.__name__ for cls in GATEWAY_CLASSES}
    assert {"FhirError", "SearchError", "ScopeError", "MappingLoadError", "VersionConflict", "QueueUnavailable",
            "DeliveryConfigError", "IngestConfigError", "Dhis2Error", "Dhis2MappingError"} <= names
    assert {"ApiError", "PayloadError"} <= {cls.__name__ for cls in SANDBOX_CLASSES}


def test_every_gateway_error_class_is_in_the_gateway_tree() -> None:
    outside = [_name(cls) for cls in GATEWAY_CLASSES if not issubclass(cls, GatewayError)]
    assert outside == []


def test_every_sandbox_error_class_is_in_the_sandbox_tree() -> None:
    outside = [_name(cls) for cls in SANDBOX_CLASSES if not issubclass(cls, SandboxError)]
    assert outside == []
    assert not any(issubclass(cls, GatewayError) for cls in SANDBOX_CLASSES)


def test_every_class_resolves_to_a_category_row() -> None:
    root = DISPOSITIONS["GatewayError"]
    for cls in GATEWAY_CLASSES:
        if cls is GatewayError:
            continue
        rows = [klass for klass in cls.__mro__ if klass.__name__ in DISPOSITIONS]
        assert rows[0] is not GatewayError, f"{_name(cls)} is in no category"
        assert disposition(cls) is DISPOSITIONS[rows[0].__name__]
    assert disposition(ValueError) is root  # foreign exceptions: as unexpected as an uncategorised error


def test_table_rows_name_exactly_one_class_of_the_tree() -> None:
    by_name: dict[str, list[str]] = {}
    for cls in GATEWAY_CLASSES:
        by_name.setdefault(cls.__name__, []).append(_name(cls))
    assert [names for names in by_name.values() if len(names) > 1] == []  # rows are keyed by name
    assert sorted(set(DISPOSITIONS) - set(by_name)) == []


def test_status_and_code_come_from_the_table_alone() -> None:
    own = [_name(cls) for cls in GATEWAY_CLASSES for attr in ("status", "code") if attr in vars(cls)]
    assert own == []


def test_rows_outside_the_client_errors_say_what_the_api_answers() -> None:
    # A bare 500, or for a store that cannot be reached now a 503 the client retries.
    unavailable = {"StoreUnavailable"}
    for cls in GATEWAY_CLASSES:
        if not issubclass(cls, CLIENT_ERRORS):
            expected = (503, "transient") if cls.__name__ in unavailable else (500, "exception")
            assert (disposition(cls).status, disposition(cls).code) == expected, _name(cls)


def _drawn_tree(doc: str) -> dict[str, str | None]:
    """``{class: parent}`` as a docstring draws it (the block starting at the first ``├``-tree root)."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if i + 1 < len(lines) and "├── " in lines[i + 1])
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in lines[start:]:
        if not line.strip():
            break
        match = re.match(r"^(?P<lead>[\s│]*)(?:[├└]── )?(?P<name>[A-Z]\w*)", line)
        assert match is not None, line
        column = match.start("name")
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[match["name"]] = stack[-1][1] if stack else None
        stack.append((column, match["name"]))
    return parents


def _defined_tree(module: ModuleType, root: type[BaseException]) -> dict[str, str | None]:
    classes = [
        obj for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, root) and obj.__module__ == module.__name__
    ]  # fmt: skip
    return {cls.__name__: None if cls is root else cls.__bases__[0].__name__ for cls in classes}


def test_the_errors_docstring_draws_the_tree_errors_py_defines() -> None:
    assert gateway.errors.__doc__ is not None
    drawn = _drawn_tree(gateway.errors.__doc__)
    assert drawn == _defined_tree(gateway.errors, GatewayError)
    categories = {name for name, parent in drawn.items() if parent == "GatewayError"}
    assert categories == {"RequestError", "MappingError", "ConfigError", "StoreError", "QueueError", "ConnectorError"}


def test_the_sandbox_docstring_draws_the_sandbox_tree() -> None:
    assert dhis2_sandbox.errors.__doc__ is not None
    drawn = _drawn_tree(dhis2_sandbox.errors.__doc__)
    assert drawn == {cls.__name__: None if cls is SandboxError else cls.__bases__[0].__name__
                     for cls in SANDBOX_CLASSES}


def test_a_class_without_a_row_inherits_its_categorys() -> None:
    assert (SearchError("x").status, SearchError("x").code) == (400, "invalid")
    assert SearchError("x", "_sort", "not-supported").code == "not-supported"
    assert outcome_for(FhirError("gone", status=410, code="deleted")) == (410, "deleted")
    assert outcome_for(VersionConflict(3)) == (500, "exception")
    assert outcome_for(KeyError("x")) == (500, "exception")
    assert exit_code_for(ScopeError("bad")) == exit_code_for(RequestError("x")) == 2
    assert exit_code_for(ConfigFileError("x")) == exit_code_for(ConfigError("x")) == 2
    assert exit_code_for(QueueUnavailable("down")) == 1


# -- what clients see ------------------------------------------------------------------------


async def test_a_search_error_is_answered_as_before(api: ApiHarness) -> None:
    response = await api.client.get("/fhir/Patient", params={"birthdate": "yesterday"})
    assert response.status_code == 400
    assert response.json() == {"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": "invalid", "expression": ["birthdate"],
        "diagnostics": "birthdate: not a FHIR date/dateTime: 'yesterday'"}]}  # fmt: skip
    response = await api.client.get("/fhir/Patient", params={"_sort": "nope"})
    assert response.status_code == 400 and response.json()["issue"][0]["code"] == "not-supported"


async def test_a_fhir_error_is_answered_as_before(api: ApiHarness) -> None:
    response = await api.client.get("/fhir/Patient/nobody")
    assert response.status_code == 404
    assert response.json() == {"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": "not-found", "diagnostics": "Patient/nobody is not known"}]}  # fmt: skip
    response = await api.anonymous().get("/fhir/Patient")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_an_internal_gateway_error_is_answered_like_a_bug(api: ApiHarness) -> None:
    app = cast(FastAPI, api.app)

    @app.get("/_test/store-refused")
    async def store_refused() -> None:
        raise VersionConflict(2)

    @app.get("/_test/bug")
    async def bug() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    # One request id for both: a 500 names the request's id, the rest must be the same.
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test",
                                 headers={"X-Request-ID": "same-id"}) as client:
        refused = await client.get("/_test/store-refused")
        crashed = await client.get("/_test/bug")
    assert (refused.status_code, refused.json()) == (crashed.status_code, crashed.json())
    assert refused.status_code == 500 and "version" not in refused.text
    # ... and it reaches the server, as an unexpected exception does, for its log.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as client:
        with pytest.raises(VersionConflict):
            await client.get("/_test/store-refused")


def test_the_cli_exits_with_the_tables_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_STORE_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    runner = CliRunner()
    bad_scope = runner.invoke(cli_app, ["clients", "create", "x", "--scope", "root"])
    assert bad_scope.exit_code == exit_code_for(ScopeError("root")) == 2
    missing = runner.invoke(cli_app, ["config", "check", "--config", str(tmp_path / "missing.yaml")])
    assert missing.exit_code == exit_code_for(ConfigFileError("missing")) == 2
    assert missing.stderr.startswith("gateway: ") and "cannot read" in missing.stderr


def test_raised_at_names_the_module_and_line_never_a_path() -> None:
    """Logs of loop failures (the outbox, scheduled tasks) say where, as module:line: a path names
    the host's layout, which the README keeps out of logs."""
    from gateway.errors import raised_at

    try:
        import gateway.errors as errors

        errors.invalid("x").__class__  # noqa: B018 - a line of this module, then a raise in it
        raise ValueError("never logged")
    except ValueError as exc:
        where = raised_at(exc)
    assert where.startswith("tests.test_errors:") and "/" not in where
    assert raised_at(ValueError("never raised")) == "?"
