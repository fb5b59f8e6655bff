"""fhir.md §6 check 58: schemathesis on the gateway's OpenAPI finds no 5xx and no error without an OO.

schemathesis loads ``/openapi.json`` from a live loopback gateway (enriched by
``tests.robustness.openapi``, since the FHIR routes declare little), generates requests
for every operation — schema-conforming and schema-violating — and sends them. Each
response must not be a 5xx, and every 4xx must be an OperationOutcome served as
``application/fhir+json`` (the declared 200-only responses are not held against the
gateway: FHIR errors are its contract, not FastAPI's defaults).

Bounded and repeatable: a fixed number of examples per operation and mode, derandomized.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation

from tests.robustness.http import Gateway, serve
from tests.robustness.openapi import enrich
from tests.robustness.scoped import PROFILES, leaked, new_markers, seed_markers
from tests.support.gateway_app import ALL_SCOPES

Operation = APIOperation[Any, Any, Any, Any]
EXAMPLES_PER_OPERATION = 25
SCOPED_EXAMPLES_PER_OPERATION = 6  # per scope profile (tests.robustness.scoped.PROFILES)
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class Target:
    """The gateway under test, its schema as schemathesis loaded it, and the markers it holds."""

    gateway: Gateway
    schema: schemathesis.BaseSchema
    root: str  # scheme://host:port, the base the OpenAPI paths hang from
    markers: dict[str, str]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The SQLite gateway with its OpenAPI document on (it is off by default)."""
    directory = Path(tmp_path_factory.mktemp("schemathesis"))
    with serve(directory, f"sqlite:///{directory / 'gateway.db'}", api_docs=True, clients=PROFILES) as served:
        yield served


@pytest.fixture(scope="module")
def target(gateway: Gateway) -> Iterator[Target]:
    """The SQLite gateway with the fixture resources (marked: ``tests.robustness.scoped``), and its enriched schema."""
    root = gateway.base.removesuffix("/fhir")
    markers = new_markers()
    with gateway.client() as fhir:
        seed_markers(fhir, markers)  # the fixture resources among them: reads, updates and patches of real ones
    with httpx.Client() as client:
        assert client.get(f"{root}/openapi.json").status_code == 401
        response = client.get(f"{root}/openapi.json", headers={"Authorization": f"Bearer {gateway.token}"})
    assert response.status_code == 200
    yield Target(gateway, schemathesis.openapi.from_dict(enrich(response.json())), root, markers)


def _operations(schema: schemathesis.BaseSchema) -> list[Operation]:
    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the OpenAPI document has an error: {result}"
        found.append(result.ok())
    return found


def _violation(status: int, headers: dict[str, list[str]], content: bytes) -> str | None:
    """Why this response breaks the gateway's error contract (None: it does not)."""
    if status >= 500:
        return f"server error {status}: {content[:300]!r}"
    if status < 400:
        return None
    media = (headers.get("content-type") or [""])[0].split(";")[0].strip().lower()
    if media != FHIR_JSON:
        return f"{status} with Content-Type {media!r}"
    try:
        body: Any = json.loads(content)
    except ValueError:
        return f"{status} body is not JSON"
    issues = body.get("issue") if isinstance(body, dict) else None
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome" or not issues:
        return f"{status} body is not an OperationOutcome"
    return None


def _run(
    target: Target,
    operation: Operation,
    mode: GenerationMode,
    sent: list[int],
    *,
    profile: str | None = None,
    examples: int = EXAMPLES_PER_OPERATION,
) -> list[str]:
    """Send ``examples`` generated cases of ``operation``, as ``profile``'s client (default: the
    all-powerful one; then also no marker of a type it may not read may show)."""
    failures: list[str] = []
    token = target.gateway.tokens[profile] if profile else target.gateway.token
    auth = {"Authorization": f"Bearer {token}"}
    scopes = PROFILES[profile] if profile else ALL_SCOPES

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # a failure is reported, not shrunk: bounded time
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Case[Operation]) -> None:
        response = case.call(base_url=target.root, headers=auth, timeout=30)
        sent.append(response.status_code)
        problem = _violation(response.status_code, response.headers, response.content)
        text = f"{response.headers}\n{response.content.decode('utf-8', 'replace')}"
        if problem is None and (shown := leaked(scopes, target.markers, text)) is not None:
            problem = f"shows a {shown} marker to {' '.join(scopes)}: {text[:300]}"
        if problem:
            failures.append(f"{case.method} {case.formatted_path} {case.query or ''}: {problem}")

    try:
        check()
    except Unsatisfiable:
        # Negative mode on an operation with nothing that can be made invalid: no body, and only
        # parameters that accept any string (the overall request count below still has to add up).
        assert mode == GenerationMode.NEGATIVE, f"{operation.label}: no positive case could be generated"
    return failures


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_58_schemathesis_finds_no_server_errors_and_only_operation_outcomes(
    target: Target, mode: GenerationMode
) -> None:
    operations = _operations(target.schema)
    assert len(operations) >= 15  # every FHIR interaction is in the document
    sent: list[int] = []
    failures = [problem for operation in operations for problem in _run(target, operation, mode, sent)]
    assert not failures, "\n".join(failures[:20])
    assert len(sent) >= 10 * len(operations) // 2, f"only {len(sent)} requests were generated"
    assert any(200 <= status < 300 for status in sent), "no generated request got past validation"


def test_the_enriched_document_still_describes_every_route(target: Target) -> None:
    labels = {op.label for op in _operations(target.schema)}
    assert {"GET /fhir/{rtype}", "POST /fhir/", "PATCH /fhir/{rtype}/{rid}", "GET /fhir/metadata"} <= labels


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_58_schemathesis_with_scoped_tokens_finds_no_server_errors_and_no_leaks(target: Target, profile: str) -> None:
    operations = _operations(target.schema)
    sent: list[int] = []
    failures = [
        problem
        for operation in operations
        for problem in _run(target, operation, GenerationMode.POSITIVE, sent, profile=profile,
                            examples=SCOPED_EXAMPLES_PER_OPERATION)
    ]  # fmt: skip
    assert not failures, "\n".join(failures[:20])
    assert len(sent) >= SCOPED_EXAMPLES_PER_OPERATION * len(operations) // 2, f"only {len(sent)} requests"
    assert 403 in sent, "no generated request was refused: is the token scoped?"
