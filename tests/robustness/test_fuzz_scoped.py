"""The FHIR fuzzers again, as clients that may do little (``tests.robustness.scoped.PROFILES``).

Every response passes the usual oracles (no 5xx, OperationOutcome on errors, schema-valid
resources) and the leak oracle: no marker of a type the client may not read, in any
response — searches with includes, ``_has`` and chains, histories, ``$everything``,
Bundles, OperationOutcomes. A write or Bundle refused with 403 changes nothing. A control
test first shows the markers are reachable: each readable marker type appears somewhere
in the answers to the reach requests, so the oracle is not silent for want of data.
Bounded and derandomized like ``test_fuzz_fhir``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PG_URL
from tests.robustness.bodies import dumps, encoded, fhir_headers, mutate, paths, prefers, resources
from tests.robustness.bundles import bundles, fhirpath_patches, json_patches
from tests.robustness.http import Gateway, history_total, raw_request, serve
from tests.robustness.queries import search_queries
from tests.robustness.scoped import (
    MARKER_TYPES,
    PROFILES,
    leak_hook,
    marker_id,
    new_markers,
    reach_requests,
    seed_markers,
    unreadable,
)
from tests.robustness.seeds import FUZZ_TYPES, seed
from tests.support.permission_matrix import Need, allows, returnable

SCOPED = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                           HealthCheck.function_scoped_fixture],
)  # fmt: skip
Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Scoped:
    """A gateway holding the marked resources, and the run's markers."""

    gateway: Gateway
    markers: dict[str, str]

    def client(self, profile: str) -> httpx.Client:
        """A checked client with ``profile``'s token and the leak oracle."""
        hook = leak_hook(PROFILES[profile], self.markers)
        return self.gateway.client(token=self.gateway.tokens[profile], hooks=[hook])

    def reseed(self) -> None:
        """Put the marked resources back (a scoped writer may have changed or deleted them)."""
        with self.gateway.client() as admin:
            seed_markers(admin, self.markers)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def scoped(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scoped]:
    """A gateway per backend with the scoped clients and the marked resources."""
    directory = Path(tmp_path_factory.mktemp(f"scoped-{request.param}"))
    schema = f"sc_{uuid.uuid4().hex[:12]}"
    url = f"sqlite:///{directory / 'gateway.db'}" if request.param == "sqlite" else f"{PG_URL}?schema={schema}"
    try:
        with serve(directory, url, clients=PROFILES) as gateway:
            target = Scoped(gateway, new_markers())
            target.reseed()
            yield target
    finally:
        if request.param == "postgresql":
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=sorted(PROFILES))
def profile(request: pytest.FixtureRequest) -> str:
    """The name of a scope profile."""
    return str(request.param)


@pytest.fixture
def client(profile: str, scoped: Scoped) -> Iterator[httpx.Client]:
    """A client with ``profile``'s token, checked for leaks, the marked resources freshly in place."""
    scoped.reseed()
    with scoped.client(profile) as fhir:
        yield fhir


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_reach_requests_show_readable_markers_and_no_others(scoped: Scoped, profile: str) -> None:
    scoped.reseed()
    scopes = PROFILES[profile]
    seen: set[str] = set()
    with scoped.gateway.client(token=scoped.gateway.tokens[profile],
                               hooks=[leak_hook(scopes, scoped.markers, seen)]) as fhir:  # fmt: skip
        statuses = [fhir.request(method, path).status_code for method, path in reach_requests()]
    readable = {t for t in MARKER_TYPES if returnable(scopes, t)}
    assert seen == readable, f"markers seen {sorted(seen)}, readable {sorted(readable)}"
    assert 403 in statuses and (200 in statuses) == bool(readable)
    assert set(unreadable(scopes, scoped.markers)) == set(MARKER_TYPES) - readable


@SCOPED
@given(query=search_queries(), post=st.booleans(), prefer=st.one_of(st.none(), prefers))
def test_scoped_search_never_fails_or_leaks(
    client: httpx.Client, query: tuple[str, bytes], post: bool, prefer: str | None
) -> None:
    rtype, qs = query
    headers = [(b"prefer", prefer.encode())] if prefer else []
    if post:
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
        raw_request(client, "POST", f"/{rtype}/_search".encode(), headers=headers, content=qs)
    else:
        raw_request(client, "GET", f"/{rtype}?".encode() + qs, headers=headers)


@SCOPED
@given(data=st.data())
def test_scoped_bundles_never_fail_or_leak(client: httpx.Client, scoped: Scoped, data: Any) -> None:
    shape = data.draw(bundles(scoped.gateway.base), label="bundle")
    prefer = data.draw(st.sampled_from([None, b"return=minimal", b"return=representation"]))
    headers = [(b"content-type", b"application/fhir+json"), *([(b"prefer", prefer)] if prefer else [])]
    body = data.draw(st.one_of(st.just(dumps(shape.body)), encoded(shape.body)), label="body")
    with scoped.gateway.client() as admin:
        before = history_total(admin)
        response = raw_request(client, "POST", b"", headers=headers, content=body)
        if response.status_code == 403:
            assert history_total(admin) == before, "a refused transaction changed the store"


@SCOPED
@given(data=st.data())
def test_scoped_writes_never_fail_or_leak(client: httpx.Client, scoped: Scoped, profile: str, data: Any) -> None:
    # Mostly the types the client may write: a refusal at the door tests little.
    writable = [t for t in FUZZ_TYPES if any(allows(PROFILES[profile], [Need(t, x)]) for x in "cud")]
    rtype = data.draw(st.sampled_from(writable * 4 + list(FUZZ_TYPES)), label="type")
    rid = data.draw(st.sampled_from([marker_id(rtype), marker_id(rtype), "fuzz-patient", "fuzz-observation",
                                     "fuzz-new"]))  # fmt: skip
    method = data.draw(st.sampled_from(["POST", "PUT", "PUT?", "PATCH", "PATCH", "PATCH", "DELETE", "DELETE?"]),
                       label="method")  # fmt: skip
    headers: Headers = data.draw(fhir_headers(), label="headers")
    if method == "PATCH" and data.draw(st.booleans(), label="fhirpath"):
        headers.append((b"content-type", b"application/fhir+json"))
        body: bytes | None = dumps(data.draw(fhirpath_patches(), label="fhirpath patch"))
    elif method == "PATCH":
        headers.append((b"content-type", b"application/json-patch+json"))
        simple = st.sampled_from([[], [{"op": "add", "path": "/language", "value": "en"}],
                                  [{"op": "test", "path": "/id", "value": "x"}]])  # fmt: skip
        body = dumps(data.draw(st.one_of(simple, json_patches()), label="patch"))
    elif method in ("POST", "PUT", "PUT?"):
        doc = {**seed(rtype), "id": rid} if method == "PUT" else data.draw(resources(rtype), label="resource")
        if data.draw(st.integers(0, 3)) == 0:
            doc = data.draw(mutate(doc), label="mutated")
        body = data.draw(encoded(doc), label="body")
        headers.append((b"content-type", b"application/fhir+json"))
        if method == "POST" and data.draw(st.booleans()):
            headers.append((b"if-none-exist", f"identifier=urn:fuzz:known|{rid}".encode()))
    else:
        body = None
    target = {"PUT?": f"/{rtype}?_id={rid}", "DELETE?": f"/{rtype}?identifier=urn:fuzz:known|k1",
              "POST": f"/{rtype}"}.get(method, f"/{rtype}/{rid}")  # fmt: skip
    with scoped.gateway.client() as admin:
        before = history_total(admin)
        response = raw_request(client, method.rstrip("?"), target.encode(), headers=headers, content=body)
        if response.status_code == 403:
            assert history_total(admin) == before, "a refused write changed the store"


@SCOPED
@given(
    request=st.one_of(st.sampled_from(reach_requests()), st.tuples(st.just("GET"), paths().map(bytes.decode))),
    suffix=st.sampled_from(["", "?_count=1", "?_summary=true", "?_elements=identifier", "?_offset=1", "?_since=2000"]),
    headers=fhir_headers(),
)
def test_scoped_reads_never_fail_or_leak(
    client: httpx.Client, request: tuple[str, str], suffix: str, headers: Headers
) -> None:
    method, path = request
    joined = path + (suffix.replace("?", "&") if "?" in path else suffix)
    raw_request(client, method, joined.encode("utf-8", "surrogateescape"), headers=headers)
