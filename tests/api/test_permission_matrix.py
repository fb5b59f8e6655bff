"""The permission matrix: every interaction the CapabilityStatement declares, on a sample of
types, in every form (REST, batch entry, transaction entry), against generated scope sets.

The rule table and the scope sets are ``tests.support.permission_matrix``'s. An allowed
request gets its 2xx (never 401/403); without a valid token every form is a 401; a refused
one gets 403 ``forbidden`` as an OperationOutcome (a batch: that entry's
``response.status`` is 403; a transaction: the whole Bundle is refused with 403) and
changes nothing: the change feed's last sequence number stays where it was. Allowed reads
change nothing either; a refused request on a missing resource is a 403 too (not a 404 that
would tell the resource is not there). ``$everything`` returns exactly the linked types the
client may read; a JSON Patch by a client that may not read the type answers without the
resource.

Probes are collected from the CapabilityStatement a throwaway app serves; the app under
test (one per backend, shared by the module) must serve the same one.
"""

from __future__ import annotations

import copy
import json
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from gateway.api.app import create_app
from gateway.settings import Settings
from gateway.store import Store, open_store
from tests.conftest import PG_URL, make_token
from tests.support.gateway_app import MACHINE_SPEED_LIMITS
from tests.support.live_server import LiveServer
from tests.support.permission_matrix import (
    Call,
    Probe,
    UnknownInteraction,
    allows,
    linked_types,
    pick_types,
    probes,
    returnable,
    scope_sets,
    seed_id,
    seed_resource,
)


def _served_statement(directory: Path) -> dict[str, Any]:
    settings = Settings(store_url=f"sqlite:///{directory / 'statement.db'}", rate_limit=MACHINE_SPEED_LIMITS)
    with LiveServer(create_app(settings)) as server:
        response = httpx.get(f"{server.url}/fhir/metadata")
    assert response.status_code == 200, response.text
    statement: dict[str, Any] = response.json()
    return statement


with tempfile.TemporaryDirectory() as _directory:
    STATEMENT = _served_statement(Path(_directory))
TYPES = pick_types(STATEMENT)
PROBES = {probe.id: probe for probe in probes(STATEMENT, TYPES)}


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


@dataclass
class Matrix:
    """The app under test on one backend, tokens per scope set, and the change-feed position."""

    client: httpx.Client
    store: Store
    admin: str
    tokens: dict[tuple[str, ...], str] = field(default_factory=dict)

    def token(self, scopes: tuple[str, ...]) -> str:
        if scopes not in self.tokens:
            self.tokens[scopes] = make_token(self.store, scopes)
        return self.tokens[scopes]

    def send(self, call: Call, token: str | None) -> httpx.Response:
        headers = {**_auth(token), **dict(call.headers)}
        return self.client.request(call.method, f"/fhir{call.path}", params=list(call.params), headers=headers,
                                   content=call.body)  # fmt: skip

    def bundle(self, kind: str, entry: dict[str, Any], token: str | None) -> httpx.Response:
        body = json.dumps({"resourceType": "Bundle", "type": kind, "entry": [entry]})
        headers = {**_auth(token), "Content-Type": "application/fhir+json"}
        return self.client.post("/fhir", content=body, headers=headers)

    def restore(self, rtype: str) -> None:
        seed = seed_resource(rtype)
        response = self.client.put(f"/fhir/{rtype}/{seed['id']}", json=seed,
                                   headers={"Authorization": f"Bearer {self.admin}"})  # fmt: skip
        assert response.status_code in (200, 201), response.text


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def matrix(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    """One app per backend for the whole module, holding the seeds."""
    schema = f"pm_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('matrix') / 'store.db'}"
    else:
        url = f"{PG_URL}?schema={schema}"
    store = open_store(url)
    try:
        exports = {"directory": tmp_path_factory.mktemp("exports")}
        app = create_app(Settings(store_url=url, rate_limit=MACHINE_SPEED_LIMITS, bulk_export=exports), store=store)
        with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            served = client.get("/fhir/metadata").json()
            # The security section names the token URL, which holds the server's own address.
            assert [{k: v for k, v in rest.items() if k != "security"} for rest in served["rest"]] == [
                {k: v for k, v in rest.items() if k != "security"} for rest in STATEMENT["rest"]
            ], "the app under test serves other interactions than the probes'"
            matrix = Matrix(client, store, make_token(store, ("system/*.cruds",)))
            for rtype in sorted(TYPES, key=lambda t: t != "Patient"):
                matrix.restore(rtype)
            yield matrix
    finally:
        store.close()
        if request.param == "postgresql":
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _forbidden(outcome: Any) -> str | None:
    """Why ``outcome`` is not a ``forbidden`` OperationOutcome (None: it is)."""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return f"not an OperationOutcome: {json.dumps(outcome)[:200]}"
    if [i.get("code") for i in outcome.get("issue", [])][:1] != ["forbidden"]:
        return f"issue code is not forbidden: {json.dumps(outcome)[:200]}"
    return None


def _check_rest(probe: Probe, response: httpx.Response, allowed: bool) -> str | None:
    if allowed:
        if response.status_code != probe.ok:
            return f"allowed, but {response.status_code}: {response.text[:200]}"
        return None
    if response.status_code != 403:
        return f"refused, but {response.status_code}: {response.text[:200]}"
    if not response.headers.get("content-type", "").startswith("application/fhir+json"):
        return f"403 with Content-Type {response.headers.get('content-type')!r}"
    return _forbidden(response.json())


def _check_bundle(probe: Probe, kind: str, response: httpx.Response, allowed: bool) -> str | None:
    if kind == "transaction" and not allowed:
        return _check_rest(probe, response, False)
    if response.status_code != 200:
        return f"{kind}: {response.status_code}: {response.text[:200]}"
    (entry,) = response.json()["entry"]
    status = str(entry["response"]["status"])
    if allowed:
        return None if status.split(" ")[0] == probe.entry_ok else f"{kind} entry allowed, but {status}"
    if status.split(" ")[0] != "403":
        return f"{kind} entry refused, but {status}"
    return _forbidden(entry["response"].get("outcome"))


def _check_everything(body: dict[str, Any], scopes: tuple[str, ...]) -> str | None:
    returned = {e["resource"]["resourceType"] for e in body.get("entry", [])}
    # The seeds were written over REST, so each has a Provenance naming its client; those about
    # the Patient are in its compartment too.
    linked = {*linked_types(TYPES), "Provenance"}
    expected = {"Patient"} | {t for t in linked if returnable(scopes, t)}
    return None if returned == expected else f"$everything returned {sorted(returned)}, expected {sorted(expected)}"


def _case(matrix: Matrix, probe: Probe, scopes: tuple[str, ...], form: str) -> list[str]:
    """Run one probe in one form with one scope set; the problems found."""
    allowed = allows(scopes, probe.needs)
    token = matrix.token(scopes)
    before = matrix.store.last_change_seq()
    problems: list[str | None] = []
    hidden = allowed and probe.stored_body and probe.rtype is not None and not returnable(scopes, probe.rtype)
    if form == "rest":
        for call in probe.rest:
            response = matrix.send(call, token)
            problems.append(_check_rest(probe, response, allowed))
            if allowed and probe.filters_types and response.status_code == 200:
                problems.append(_check_everything(response.json(), scopes))
            if hidden and response.content:
                problems.append(f"the stored resource went to a client that may not read it: {response.text[:200]}")
    else:
        assert probe.entry is not None
        response = matrix.bundle(form, probe.entry, token)
        problems.append(_check_bundle(probe, form, response, allowed))
        if allowed and probe.filters_types and response.status_code == 200:
            problems.append(_check_everything(response.json()["entry"][0].get("resource", {}), scopes))
        if hidden and response.status_code == 200 and "resource" in response.json()["entry"][0]:
            problems.append(f"the stored resource went to a client that may not read it: {response.text[:200]}")
    after = matrix.store.last_change_seq()
    if not (allowed and probe.writes) and after != before:
        problems.append(f"{'refused' if not allowed else 'a read'} changed the store (seq {before} -> {after})")
    if allowed and probe.deletes and probe.rtype is not None:
        matrix.restore(probe.rtype)
    where = f"{form} {probe.id} with {' '.join(scopes)} ({'allowed' if allowed else 'refused'})"
    return [f"{where}: {p}" for p in problems if p]


@pytest.mark.parametrize("probe_id", sorted(PROBES))
def test_permission_matrix(matrix: Matrix, probe_id: str) -> None:
    probe = PROBES[probe_id]
    cases = [(scopes, form) for scopes in scope_sets(probe, TYPES) for form in probe.forms]
    assert any(allows(s, probe.needs) for s, _ in cases) and not all(allows(s, probe.needs) for s, _ in cases)
    problems = [p for scopes, form in cases for p in _case(matrix, probe, scopes, form)]
    problems += [p for form in probe.forms for p in _anonymous(matrix, probe, form)]
    problems += _missing_target(matrix, probe, [s for s, _ in cases if not allows(s, probe.needs)])
    assert not problems, "\n".join(problems[:20])


def _missing_target(matrix: Matrix, probe: Probe, refused: list[tuple[str, ...]]) -> list[str]:
    """A refused client learns nothing about existence: a missing resource is a 403 to it too."""
    if probe.rtype is None or seed_id(probe.rtype) not in probe.rest[0].path:
        return []
    missing = replace(probe.rest[0], path=probe.rest[0].path.replace(seed_id(probe.rtype), "pm-missing"))
    problems = []
    for scopes in refused:
        response = matrix.send(missing, matrix.token(scopes))
        if response.status_code != 403:
            problems.append(f"{probe.id} on a missing id with {' '.join(scopes)}: {response.status_code}")
    return problems


def _anonymous(matrix: Matrix, probe: Probe, form: str) -> list[str]:
    """Without a token (or with one the gateway never issued) every form is a 401 OperationOutcome."""
    before = matrix.store.last_change_seq()
    problems = []
    for token in (None, "gw_not-a-token"):
        if form == "rest":
            responses = [matrix.send(call, token) for call in probe.rest]
        else:
            assert probe.entry is not None
            responses = [matrix.bundle(form, probe.entry, token)]
        for response in responses:
            outcome = response.json() if response.content else None
            if response.status_code != 401 or not isinstance(outcome, dict) or outcome.get("resourceType") != (
                "OperationOutcome"
            ):
                problems.append(f"{form} {probe.id} with token {token}: {response.status_code} {response.text[:200]}")
    if matrix.store.last_change_seq() != before:
        problems.append(f"{form} {probe.id} without a valid token changed the store")
    return problems


def test_the_matrix_covers_every_declared_interaction() -> None:
    declared = {(r["type"], i["code"]) for r in STATEMENT["rest"][0]["resource"] if r["type"] in TYPES
                for i in r["interaction"]}  # fmt: skip
    covered = {(p.rtype, p.interaction) for p in PROBES.values()}
    assert declared <= covered
    assert ("Patient", "operation:everything") in covered and (None, "history-system") in covered
    assert {(t, "operation:validate") for t in TYPES} <= covered
    assert len(TYPES) == 6 and TYPES[:5] == ("Patient", "Observation", "Encounter", "ServiceRequest", "Task")
    forms = {form for p in PROBES.values() for form in p.forms}
    assert forms == {"rest", "batch", "transaction"}


@pytest.mark.parametrize(
    "where, item",
    [("Patient", {"operation": {"name": "lastn", "definition": "x"}}), ("Patient", {"interaction": {"code": "x"}}),
     (None, {"interaction": {"code": "search-system"}})],
    ids=["operation", "type-interaction", "system-interaction"],
)  # fmt: skip
def test_the_generator_refuses_what_it_has_no_rule_for(where: str | None, item: dict[str, Any]) -> None:
    statement = copy.deepcopy(STATEMENT)
    rest = statement["rest"][0]
    holder = rest if where is None else next(r for r in rest["resource"] if r["type"] == where)
    ((key, value),) = item.items()
    holder.setdefault(key, []).append(value)
    with pytest.raises(UnknownInteraction):
        probes(statement, TYPES)


def test_rest_only_interactions_are_refused_in_bundles_for_everyone(matrix: Matrix) -> None:
    # The rule table says "REST only": a Bundle entry asking for them is a 400, not a way around a scope.
    rest_only = [p for p in PROBES.values() if p.entry is None]
    assert {p.interaction for p in rest_only} == {"operation:export", "operation:validate"}
    for probe in rest_only:
        entry = {"request": {"method": "GET", "url": probe.rest[0].path.lstrip("/")}}
        for scopes in (("system/*.cruds",), ("system/Patient.c",)):
            answer = matrix.bundle("batch", entry, matrix.token(scopes))
            assert answer.status_code == 200, answer.text
            assert answer.json()["entry"][0]["response"]["status"] == "400", (probe.id, answer.text)
            assert matrix.bundle("transaction", entry, matrix.token(scopes)).status_code == 400
