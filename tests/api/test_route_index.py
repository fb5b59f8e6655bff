"""``IndexedRoutes`` picks the route Starlette's in-order scan would, for every path shape."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Match, Route

from gateway.api.app import create_app
from gateway.api.route_index import IndexedRoutes
from gateway.settings import Settings
from tests.conftest import ApiHarness

_SEGMENTS = ["Observation", "Patient", "Subscription", "Basic", "Group", "$export", "$export-status", "$export-file",
             "_history", "_search", "metadata", ".well-known", "smart-configuration", "$status", "$everything",
             "$match", "topic-x", "o1", "2", ""]  # fmt: skip
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def _shape(path: str) -> tuple[int, str]:
    rest = path[len("/fhir") :]
    return rest.count("/"), rest[1:].split("/", 1)[0]


def _linear(routes: list[Route], scope: dict[str, Any]) -> tuple[Match, Route | None]:
    """Starlette's rule: the first full match, else the first partial one; but a path whose first
    segment is one of the server's own words (``metadata``, ``_history``: a literal route at that
    depth, not a resource type's capital) is never taken by a ``{rtype}`` route, and no parameter
    takes an operation name (``$match``)."""
    depth, first = _shape(scope["path"]) if scope["path"].startswith("/fhir/") else (-1, "")
    reserved = not first[:1].isupper() and any(
        _shape(r.path_format) == (depth, first) for r in routes if r.path_format.startswith("/fhir/")
    )
    # Routes whose parameters took one of the server's words (ids never start with _) count
    # only when no other route has the path: PUT /fhir/Patient/_history is 405, not a bad id.
    strong: list[tuple[Match, Route]] = []
    weak: list[tuple[Match, Route]] = []
    for route in routes:
        if reserved and _shape(route.path_format)[1].startswith("{"):
            continue
        match, child = route.matches(scope)
        if match is not Match.NONE:
            if any(str(value).startswith("$") for value in child.get("path_params", {}).values()):
                continue  # an operation name is no type, id or version
            words = any(str(v)[:1] == "_" for v in child.get("path_params", {}).values())
            (weak if words else strong).append((match, route))
    for found in (strong, weak):
        for match, route in found:
            if match is Match.FULL:
                return match, route
        if found and found is strong:
            return Match.PARTIAL, found[0][1]
    return (Match.PARTIAL, weak[0][1]) if weak else (Match.NONE, None)


@pytest.fixture(scope="module")
def fhir_routes(tmp_path_factory: pytest.TempPathFactory) -> IndexedRoutes:
    path: Path = tmp_path_factory.mktemp("idx") / "i.db"
    app = create_app(Settings(store_url=f"sqlite:///{path}"))
    (indexed,) = [r for r in app.router.routes if isinstance(r, IndexedRoutes)]
    return indexed


def test_the_index_picks_what_the_in_order_scan_picks(fhir_routes: IndexedRoutes) -> None:
    paths = ["/fhir", "/fhir/", "/fhirx", "/other", "/fhir//"]
    paths += ["/fhir/" + "/".join(p) for p in itertools.product(_SEGMENTS, repeat=1)]
    paths += ["/fhir/" + "/".join(p) for p in itertools.product(_SEGMENTS, _SEGMENTS)]
    paths += ["/fhir/" + "/".join(p) for p in itertools.product(_SEGMENTS[:8], _SEGMENTS, _SEGMENTS[-6:])]
    paths += ["/fhir/Observation/o1/_history/2", "/fhir/$export-file/j/f.ndjson", "/fhir/Group/g/$export/x"]
    checked = 0
    for path, method in itertools.product(paths, _METHODS):
        scope = _scope(method, path)
        expected_match, expected = _linear(fhir_routes.routes, scope)
        match, child = fhir_routes.matches(scope)
        assert match is expected_match, (method, path)
        if expected is not None:
            assert child["gateway.indexed_route"] is expected, (method, path)
            checked += 1
    assert checked > 1000


def test_routes_outside_the_prefix_or_of_no_fixed_depth_are_refused() -> None:
    async def endpoint(request: Any) -> None: ...

    with pytest.raises(ValueError, match="not under /fhir"):
        IndexedRoutes("/fhir", [Route("/admin/x", endpoint)])
    with pytest.raises(ValueError, match="no fixed depth"):
        IndexedRoutes("/fhir", [Route("/fhir/files/{rest:path}", endpoint)])


def test_url_path_for_finds_a_named_route(fhir_routes: IndexedRoutes) -> None:
    assert str(fhir_routes.url_path_for("vread", rtype="Patient", rid="p1", vid="2")) == "/fhir/Patient/p1/_history/2"


def _all_methods(routes: list[Route], scope: dict[str, Any]) -> set[str]:
    """Every method some route takes at the scope's path (the oracle of a 405's Allow)."""
    methods: set[str] = set()
    for route in routes:
        if route.matches(scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return methods


async def test_a_method_the_url_does_not_take_is_405_with_every_method_it_takes(
    fhir_routes: IndexedRoutes, api: ApiHarness
) -> None:
    client = api.client
    for method, path in [("PATCH", "/fhir/Patient"), ("POST", "/fhir/Patient/p1"), ("OPTIONS", "/fhir/Patient/p1"),
                         ("DELETE", "/fhir/Patient/p1/_history/1")]:
        response = await client.request(method, path)
        assert response.status_code == 405, (method, path, response.text)
        allowed = set(response.headers["allow"].split(", "))
        assert allowed == _all_methods(fhir_routes.routes, _scope(method, path)), (method, path)
        assert response.json()["resourceType"] == "OperationOutcome"
    type_url = set((await client.patch("/fhir/Patient")).headers["allow"].split(", "))
    assert type_url >= {"GET", "POST", "PUT", "DELETE"}
    instance_url = set((await client.post("/fhir/Patient/p1")).headers["allow"].split(", "))
    assert instance_url >= {"GET", "PUT", "PATCH", "DELETE"}


async def test_the_servers_own_paths_are_405_for_other_methods_not_taken_as_a_type(api: ApiHarness) -> None:
    client = api.client
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = await client.request(method, "/fhir/metadata", json={"resourceType": "Patient"})
        assert response.status_code == 405, (method, response.text)
        assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert (await client.post("/fhir/_history", json={})).status_code == 405
    for method, path in [("PUT", "/fhir/Patient/_history"), ("DELETE", "/fhir/Patient/_history"),
                         ("PATCH", "/fhir/Patient/_search"), ("PUT", "/fhir/Patient/_search")]:  # fmt: skip
        response = await client.request(method, path, json={"resourceType": "Patient", "id": "_history"})
        assert response.status_code == 405, (method, path, response.text)
        assert method not in response.headers["allow"]
    assert (await client.get("/fhir/Patient/_nothing")).status_code in (400, 404)  # no such word: a bad id
    assert (await client.get("/fhir/metadata")).status_code == 200
    created = await client.post("/fhir/Patient", json={"resourceType": "Patient"})  # {rtype} still takes types
    assert created.status_code == 201, created.text


async def test_an_operation_url_is_not_read_as_an_id(fhir_routes: IndexedRoutes, api: ApiHarness) -> None:
    """GET /fhir/Patient/$match is 405 naming POST (not a read of id "$match" answering 400)."""
    client = api.client
    for method, path, allowed in [("GET", "/fhir/Patient/$match", {"POST"}),
                                  ("DELETE", "/fhir/Patient/$export", {"GET", "HEAD", "POST"}),
                                  ("PUT", "/fhir/Subscription/$status", {"GET", "HEAD"})]:  # fmt: skip
        response = await client.request(method, path)
        assert response.status_code == 405, (method, path, response.text)
        assert set(response.headers["allow"].split(", ")) == allowed, (method, path)
    unknown = await client.get("/fhir/Patient/$nope")
    assert unknown.status_code == 404 and unknown.json()["resourceType"] == "OperationOutcome"
