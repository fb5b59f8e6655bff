"""Property tests: no request a client can send makes the FHIR API answer 5xx.

Every response goes through the oracles of ``tests.robustness.http`` (no 5xx, an
OperationOutcome as ``application/fhir+json`` on every error, schema-valid resources).
On top of that each property checks what the interaction promises:

* a refused write (any status >= 300) leaves the store untouched: the number of stored
  versions (``GET [base]/_history?_count=0``) does not change;
* a failed transaction leaves nothing behind; a successful one answers one entry per request;
* a resource the gateway accepted reads back as sent (apart from ``meta``), schema-valid;
* every ``self``/``next`` link a searchset carries works.

Runs are bounded (≤ 100 examples per property, no deadline) and derandomized, so CI sees
the same examples every time. These run with a token allowed everything; ``test_fuzz_scoped``
runs the same strategies as clients with narrow scopes and checks nothing leaks to them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.robustness.bodies import (
    HTTP_METHODS,
    accepts,
    content_types,
    dumps,
    encoded,
    etags,
    fhir_headers,
    header_bytes,
    mutate,
    paths,
    prefers,
    resources,
)
from tests.robustness.bundles import bundles, fhirpath_patches, json_patches
from tests.robustness.http import Gateway, history_total, local, raw_request
from tests.robustness.queries import search_queries
from tests.robustness.seeds import FUZZ_TYPES, KNOWN_PATIENT_ID, fixture_resources, seed

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
SMALL = settings(FUZZ, max_examples=100)
Headers = list[tuple[bytes, bytes]]


@pytest.fixture(scope="module")
def fhir(any_gateway: Gateway) -> Iterator[httpx.Client]:
    """A checked client for a gateway (each backend) holding the fixture resources."""
    with any_gateway.client() as client:
        _restore_fixtures(client)
        yield client


def _restore_fixtures(fhir: httpx.Client) -> None:
    """Put the fixture resources back as they were (a fuzzed Bundle may have changed or deleted them)."""
    for resource in fixture_resources():
        response = fhir.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code in (200, 201), response.text


def _with(headers: Headers, name: bytes, value: bytes | None) -> Headers:
    """``headers`` with ``name`` set to ``value`` unless a drawn header already sets it."""
    if value is None or any(k.lower() == name.lower() for k, _ in headers):
        return headers
    return [*headers, (name, value)]


def _declared_type(doc: Any) -> str:
    rtype = doc.get("resourceType") if isinstance(doc, dict) else None
    return rtype if isinstance(rtype, str) and rtype in FUZZ_TYPES else "Patient"


def _without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    out = dict(resource)
    meta = {k: v for k, v in out.pop("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out


def _sent_json(body: bytes) -> Any:
    try:
        # A UTF-8 byte-order mark may precede the JSON (the gateway ignores it, as RFC 8259 allows).
        return json.loads(body.decode("utf-8").removeprefix("\ufeff"))
    except ValueError:
        return None


# -- writes --------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_create_never_fails_on_the_server_and_refusals_store_nothing(fhir: httpx.Client, data: Any) -> None:
    doc = data.draw(resources(), label="resource")
    declared = _declared_type(doc)
    path_type = data.draw(st.sampled_from([declared] * 6 + ["Patient", "Foo", "Bundle", "Binary"]))
    body = data.draw(encoded(doc), label="body")
    headers = data.draw(fhir_headers(), label="headers")
    content_type = data.draw(st.one_of(st.none(), content_types), label="content-type")
    headers = _with(
        headers, b"content-type", content_type.encode("latin-1") if content_type is not None else None
    )
    before = history_total(fhir)
    response = raw_request(fhir, "POST", f"/{path_type}".encode(), headers=headers, content=body)
    after = history_total(fhir)
    if response.status_code == 201:
        assert after == before + 2  # the resource and the Provenance naming the client
        assert fhir.get(local(response.headers["location"])).status_code == 200
    else:
        assert after == before, f"{response.status_code} but the store changed"


@FUZZ
@given(data=st.data())
def test_update_never_fails_on_the_server_and_accepted_bodies_read_back(
    fhir: httpx.Client, data: Any
) -> None:
    rtype = data.draw(st.sampled_from(FUZZ_TYPES), label="type")
    rid = data.draw(
        st.sampled_from(["fuzz-put-1", "fuzz-put-2", "fuzz-put-3"] * 3 + ["a_b!", "x" * 65, "%D9%A1", "-"])
    )
    doc = seed(rtype)
    doc["id"] = rid if data.draw(st.integers(0, 3)) else data.draw(st.sampled_from(["other", 5, None]))
    if data.draw(st.integers(0, 2)) == 0:
        doc = data.draw(mutate(doc), label="mutated")
    body = data.draw(encoded(doc), label="body")
    headers = data.draw(fhir_headers(), label="headers")
    if_match = data.draw(
        st.one_of(st.none(), st.sampled_from(['W/"1"', 'W/"2"', '"1"']), etags), label="If-Match"
    )
    headers = _with(headers, b"if-match", header_bytes(if_match) if if_match is not None else None)
    before = history_total(fhir)
    response = raw_request(fhir, "PUT", f"/{rtype}/{rid}".encode(), headers=headers, content=body)
    after = history_total(fhir)
    if response.status_code not in (200, 201):
        assert after == before, f"{response.status_code} but the store changed"
        return
    assert after == before + 2  # the new version and the Provenance naming the client
    stored = fhir.get(f"/{rtype}/{rid}", headers={"Accept": "application/fhir+json"}).json()
    sent = _sent_json(body)
    assert isinstance(sent, dict), "the gateway accepted a body that is not a JSON object"
    assert _without_meta(stored) == _without_meta(sent)


@SMALL
@given(
    ops=json_patches(),
    headers=fhir_headers(),
    content_type=st.sampled_from(["application/json-patch+json"] * 4 + ["application/json", "text/plain"]),
)
def test_json_patch_never_fails_on_the_server(
    fhir: httpx.Client, ops: Any, headers: Headers, content_type: str
) -> None:
    target = {**seed("Patient"), "id": "fuzz-patch"}
    assert fhir.put("/Patient/fuzz-patch", json=target).status_code in (200, 201)
    before = history_total(fhir)
    headers = _with(headers, b"content-type", content_type.encode("latin-1"))
    response = raw_request(fhir, "PATCH", b"/Patient/fuzz-patch", headers=headers, content=dumps(ops))
    if response.status_code != 200:
        assert history_total(fhir) == before


@SMALL
@given(patch=fhirpath_patches(), headers=fhir_headers())
def test_fhirpath_patch_never_fails_on_the_server(fhir: httpx.Client, patch: Any, headers: Headers) -> None:
    target = {**seed("Patient"), "id": "fuzz-fhirpath-patch"}
    assert fhir.put("/Patient/fuzz-fhirpath-patch", json=target).status_code in (200, 201)
    before = history_total(fhir)
    headers = _with(headers, b"content-type", b"application/fhir+json")
    response = raw_request(fhir, "PATCH", b"/Patient/fuzz-fhirpath-patch", headers=headers, content=dumps(patch))
    if response.status_code != 200:
        assert history_total(fhir) == before


# -- search --------------------------------------------------------------------------------


def _follow_links(fhir: httpx.Client, bundle: Any) -> None:
    """Every link a searchset carries must itself be a working search."""
    for link in bundle.get("link", []):
        if link["relation"] in ("self", "next"):
            followed = fhir.get(local(link["url"]))
            assert followed.status_code == 200, (
                f"{link['relation']} link {link['url']} -> {followed.text[:300]}"
            )


@FUZZ
@given(
    query=search_queries(),
    prefer=st.one_of(st.none(), st.none(), prefers),
    accept=st.one_of(st.none(), st.none(), st.none(), accepts),
)
def test_search_never_fails_on_the_server(
    fhir: httpx.Client, query: tuple[str, bytes], prefer: str | None, accept: str | None
) -> None:
    rtype, qs = query
    headers = _with(
        _with([], b"prefer", prefer.encode() if prefer else None),
        b"accept",
        accept.encode() if accept is not None else None,
    )
    response = raw_request(fhir, "GET", f"/{rtype}?".encode() + qs, headers=headers)
    if response.status_code == 200:
        bundle = response.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        _follow_links(fhir, bundle)


@SMALL
@given(
    query=search_queries(),
    content_type=st.one_of(
        st.just("application/x-www-form-urlencoded"),
        st.just("application/x-www-form-urlencoded; charset=utf-8"),
        content_types,
    ),
    in_url=st.booleans(),
)
def test_post_search_never_fails_on_the_server(
    fhir: httpx.Client, query: tuple[str, bytes], content_type: str, in_url: bool
) -> None:
    rtype, qs = query
    target = f"/{rtype}/_search".encode() + (b"?" + qs if in_url else b"")
    headers = [(b"content-type", content_type.encode("latin-1"))]
    response = raw_request(fhir, "POST", target, headers=headers, content=b"" if in_url else qs)
    if response.status_code == 200:
        assert response.json()["type"] == "searchset"


# -- batch and transaction -----------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_bundles_never_fail_on_the_server_and_failed_transactions_leave_nothing(
    fhir: httpx.Client, any_gateway: Gateway, data: Any
) -> None:
    _restore_fixtures(fhir)
    shape = data.draw(bundles(any_gateway.base), label="bundle")
    path = data.draw(st.sampled_from([b"", b"/"]))
    headers = _with([], b"prefer", data.draw(st.sampled_from([None, b"return=minimal", b"handling=strict"])))
    body = data.draw(st.one_of(st.just(dumps(shape.body)), encoded(shape.body)), label="body")
    before = history_total(fhir)
    response = raw_request(
        fhir, "POST", path, headers=_with(headers, b"content-type", b"application/fhir+json"), content=body
    )
    after = history_total(fhir)
    if response.status_code != 200:
        assert after == before, f"a refused Bundle ({response.status_code}) changed the store"
        return
    answer = response.json()
    assert answer["type"] == f"{shape.kind}-response"
    assert len(answer.get("entry", [])) == shape.entries
    if shape.kind == "transaction":
        for entry in answer.get("entry", []):
            status = entry["response"]["status"]
            assert status[:1] == "2" or status.startswith("410"), status
            location = entry["response"].get("location")
            if location:
                assert fhir.get(location).status_code == 200


# -- headers, paths and methods ------------------------------------------------------------

INTERACTIONS: list[tuple[str, str]] = [
    ("GET", f"/Patient/{KNOWN_PATIENT_ID}"),
    ("GET", f"/Patient/{KNOWN_PATIENT_ID}/_history/1"),
    ("GET", f"/Patient/{KNOWN_PATIENT_ID}/_history"),
    ("GET", "/Patient?gender=female"),
    ("GET", "/metadata"),
    ("GET", f"/Patient/{KNOWN_PATIENT_ID}/$everything"),
    ("POST", "/Patient"),
    ("POST", "/Patient/_search"),
    ("POST", ""),
    ("PUT", "/Patient/fuzz-headers"),
    ("PUT", "/Patient?identifier=urn:fuzz:headers|1"),
    ("PATCH", "/Patient/fuzz-headers"),
    ("DELETE", "/Patient/fuzz-headers-gone"),
    ("DELETE", "/Patient?identifier=urn:fuzz:headers|nobody"),
]


def _body_for(method: str, path: str) -> bytes | None:
    if method == "PATCH":
        return dumps([{"op": "replace", "path": "/gender", "value": "male"}])
    if path == "":
        return dumps(
            {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [{"request": {"method": "GET", "url": f"Patient/{KNOWN_PATIENT_ID}"}}],
            }
        )
    if path.endswith("_search"):
        return b"gender=female"
    if method in ("POST", "PUT"):
        doc = {**seed("Patient"), "identifier": [{"system": "urn:fuzz:headers", "value": "1"}]}
        if path.endswith("fuzz-headers"):
            doc["id"] = "fuzz-headers"
        return dumps(doc)
    return None


@FUZZ
@given(
    interaction=st.sampled_from(INTERACTIONS),
    headers=fhir_headers(),
    authorization=st.sampled_from(
        [
            None,
            None,
            None,
            b"",
            b"Bearer",
            b"Basic dXNlcjpwYXNz",
            b"Bearer not-a-token",
            b"bearer \xff\xfe",
            b"Bearer a b c",
        ]
    ),
)
def test_headers_never_cause_a_server_error(
    fhir: httpx.Client, interaction: tuple[str, str], headers: Headers, authorization: bytes | None
) -> None:
    method, path = interaction
    if authorization is not None:
        headers = [*headers, (b"authorization", authorization)]
    target = "".join(quote(ch, safe="/?=|:$_-") for ch in path).encode()
    response = raw_request(fhir, method, target, headers=headers, content=_body_for(method, path))
    if authorization is not None and path != "/metadata":
        assert response.status_code == 401


@FUZZ
@given(
    method=st.sampled_from(HTTP_METHODS),
    path=paths(),
    query=st.sampled_from([b"", b"?", b"?_count=1", b"?_format=xml", b"?%ff=%ff"]),
    body=st.one_of(st.none(), st.builds(lambda r: dumps(r), resources())),
)
def test_any_method_on_any_path_never_fails_on_the_server(
    fhir: httpx.Client, any_gateway: Gateway, method: str, path: bytes, query: bytes, body: bytes | None
) -> None:
    if method == "HEAD":  # no body to check: only the status
        with any_gateway.client(checked=False) as plain:
            assert raw_request(plain, method, path + query, content=body).status_code < 500
        return
    raw_request(fhir, method, path + query, content=body)
