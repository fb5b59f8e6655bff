"""A conformance suite for any FHIR R4 server: does it do what its CapabilityStatement says?

``run_suite(base_url, token)`` reads ``[base]/metadata`` and then, per advertised resource
type, stores a fixture (an official R4 example, ``data/fixtures.json``) and exercises
every advertised interaction on it: create, read (content must round-trip), vread,
update, patch (JSON Patch and FHIRPath Patch), instance and type history, conditional create, every
advertised search parameter (a value computed with FHIRPath from the stored fixture must
find it, a different value must not; ``search_values.probe``) and finally delete
(then read → 410). System interactions (transaction, batch, history) are checked once.

Nothing here knows the gateway: only HTTP, the CapabilityStatement and the standard R4
search parameter definitions. ``main()`` prints a rich report and returns the exit code;
the CLI wires it as ``gateway conformance run --base-url URL --token T``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from importlib import resources
from typing import Any

import httpx

from conformance.search_values import NotProbed, SearchParamDef, load_definitions, probe

__all__ = ["CheckResult", "SuiteError", "SuiteReport", "load_fixtures", "run_suite"]

PASS, FAIL, SKIP = "pass", "fail", "skip"
_FHIR_JSON = "application/fhir+json"
_SERVER_META = ("versionId", "lastUpdated")
_TIMEOUT = httpx.Timeout(30.0)
_BASE_PROFILE = "http://hl7.org/fhir/StructureDefinition/"
# A server that rate-limits (429 with Retry-After, as the gateway does by default) is waited
# for rather than failed: the suite sends thousands of requests as fast as it can.
_THROTTLED_TRIES = 20
_MAX_WAIT = 60.0


class SuiteError(Exception):
    """The suite cannot run at all (server unreachable, no CapabilityStatement)."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check: on which type (``""`` for system level), what, the verdict and why."""

    resource_type: str
    check: str
    status: str
    detail: str = ""


@dataclass(slots=True)
class SuiteReport:
    """All check results of one run."""

    base_url: str
    software: str = ""
    results: list[CheckResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        """How many checks ended with ``status``."""
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return self.count(FAIL) == 0

    @property
    def failures(self) -> list[CheckResult]:
        """The failed checks."""
        return [r for r in self.results if r.status == FAIL]


class _Failed(Exception):
    """A check failed; the message says why."""


@cache
def load_fixtures() -> dict[str, dict[str, Any]]:
    """One official R4 example per resource type (see ``scripts/gen_conformance_fixtures.py``)."""
    text = resources.files("conformance").joinpath("data", "fixtures.json").read_text("utf-8")
    fixtures: dict[str, dict[str, Any]] = json.loads(text)
    return fixtures


def _comparable(resource: Any) -> Any:
    if not isinstance(resource, dict):
        return resource
    out = {k: v for k, v in resource.items() if k != "id"}
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items() if k not in _SERVER_META}
    if meta:
        out["meta"] = meta
    return out


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    return min(float(value), _MAX_WAIT) if value.isascii() and value.isdigit() else 1.0


def _wait(seconds: float) -> None:
    time.sleep(seconds)


class _Fhir:
    """A thin FHIR JSON client that turns every surprise into ``_Failed``."""

    def __init__(self, client: httpx.Client) -> None:
        self.http = client

    def call(self, method: str, url: str, expect: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        for attempt in range(1, _THROTTLED_TRIES + 1):
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.HTTPError as exc:
                raise _Failed(f"{method} {url}: transport error {type(exc).__name__}") from exc
            if response.status_code != 429 or 429 in expect or attempt == _THROTTLED_TRIES:
                break
            _wait(_retry_after(response))
        if response.status_code not in expect:
            raise _Failed(
                f"{method} {url}: expected {'/'.join(map(str, expect))}, got {response.status_code}"
            )
        return response

    def json(self, method: str, url: str, expect: tuple[int, ...], **kwargs: Any) -> dict[str, Any]:
        response = self.call(method, url, expect, **kwargs)
        try:
            body = response.json()
        except ValueError as exc:
            raise _Failed(f"{method} {url}: the body is not JSON") from exc
        if not isinstance(body, dict) or "resourceType" not in body:
            raise _Failed(f"{method} {url}: the body is not a FHIR resource")
        return body

    def search_ids(self, rtype: str, params: list[tuple[str, str]]) -> list[str]:
        bundle = self.json("GET", f"/{rtype}", (200,), params=params)
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "searchset":
            raise _Failed(f"GET /{rtype}: not a searchset Bundle")
        return [
            e["resource"]["id"]
            for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") != "include"
        ]


class _TypeRun:
    """The checks of one resource type, in an order where each builds on the last."""

    def __init__(
        self,
        fhir: _Fhir,
        report: SuiteReport,
        entry: dict[str, Any],
        fixture: dict[str, Any],
        definitions: list[SearchParamDef],
        patch_formats: set[str],
    ) -> None:
        self.fhir, self.report, self.entry, self.fixture = fhir, report, entry, fixture
        self.rtype: str = entry["type"]
        self.interactions = {i.get("code") for i in entry.get("interaction", [])}
        self.definitions = definitions
        self.patch_formats = patch_formats
        self.rid = ""
        self.stored: dict[str, Any] = {}

    def check(self, name: str, fn: Callable[[], str | None], needs: str | None = None) -> bool:
        if needs is not None and needs not in self.interactions:
            return False
        try:
            skipped = fn()
        except _Failed as exc:
            self.report.results.append(CheckResult(self.rtype, name, FAIL, str(exc)))
            return False
        status = SKIP if skipped else PASS
        self.report.results.append(CheckResult(self.rtype, name, status, skipped or ""))
        return True

    def run(self) -> None:
        created = self.check("create", self.create, "create") or self.check(
            "update-create", self.put_new, "update"
        )
        if not created:
            self.report.results.append(CheckResult(self.rtype, "fixture", SKIP, "cannot store a fixture"))
            return
        self.check("read", self.read, "read")
        self.check("vread", self.vread, "vread")
        for param in self.entry.get("searchParam", []):
            self.check(f"search {param.get('name')}", partial(self.search, param), "search-type")
        self.check("update", self.update, "update")
        if "application/json-patch+json" in self.patch_formats:
            self.check("patch", self.patch, "patch")
        if "application/fhir+json" in self.patch_formats:
            self.check("patch (FHIRPath Patch)", self.fhirpath_patch, "patch")
        self.check("history-instance", self.history_instance, "history-instance")
        self.check("history-type", self.history_type, "history-type")
        if self.entry.get("conditionalCreate"):
            self.check("conditional create", self.conditional_create, "create")
        self.check("delete", self.delete, "delete")

    # -- interactions ---------------------------------------------------------------

    def _body(self) -> dict[str, Any]:
        body = {k: v for k, v in self.fixture.items() if k not in ("id", "meta")}
        meta = {k: v for k, v in self.fixture.get("meta", {}).items() if k not in _SERVER_META}
        if meta:  # profiles, tags and security labels belong to the content
            body["meta"] = meta
        return body

    def create(self) -> None:
        headers = {"Content-Type": _FHIR_JSON, "Prefer": "return=representation"}
        response = self.fhir.call("POST", f"/{self.rtype}", (201,), json=self._body(), headers=headers)
        location = response.headers.get("location", "")
        if f"/{self.rtype}/" not in location:
            raise _Failed(f"POST /{self.rtype}: Location {location[:80]!r} does not name the new resource")
        self.rid = location.split(f"/{self.rtype}/", 1)[1].split("/", 1)[0]
        self.stored = self.fhir.json("GET", f"/{self.rtype}/{self.rid}", (200,))

    def put_new(self) -> None:
        self.rid = f"conf-{uuid.uuid4().hex[:16]}"
        body = {**self._body(), "id": self.rid}
        self.fhir.call(
            "PUT", f"/{self.rtype}/{self.rid}", (201,), json=body, headers={"Content-Type": _FHIR_JSON}
        )
        self.stored = self.fhir.json("GET", f"/{self.rtype}/{self.rid}", (200,))

    def read(self) -> None:
        body = self.fhir.json("GET", f"/{self.rtype}/{self.rid}", (200,))
        if body.get("id") != self.rid or not body.get("meta", {}).get("versionId"):
            raise _Failed("read: id or meta.versionId wrong")
        if _comparable(body) != _comparable(self.fixture):
            raise _Failed("read: the content differs from what was stored")

    def vread(self) -> None:
        version = self.stored.get("meta", {}).get("versionId")
        if not version:
            return None
        body = self.fhir.json("GET", f"/{self.rtype}/{self.rid}/_history/{version}", (200,))
        if body.get("meta", {}).get("versionId") != version:
            raise _Failed("vread: returned another version")
        return None

    def search(self, advertised: dict[str, Any]) -> str | None:
        name = str(advertised.get("name", ""))
        definition = self._definition(advertised)
        if definition is None:
            return "no definition known for this parameter"
        try:
            found = probe(definition, self.stored)
        except NotProbed as exc:
            return str(exc)
        narrowed = [("_id", self.rid)] if name != "_id" else []
        hits = self.fhir.search_ids(self.rtype, [*narrowed, (name, found.match)])
        if self.rid not in hits:
            raise _Failed(f"{name}={found.match} did not find the fixture")
        misses = self.fhir.search_ids(self.rtype, [*narrowed, (name, found.miss)])
        if self.rid in misses:
            raise _Failed(f"{name}={found.miss} found the fixture, which has no such value")
        return None

    def _definition(self, advertised: dict[str, Any]) -> SearchParamDef | None:
        url, name = advertised.get("definition"), advertised.get("name")
        for param in self.definitions:
            if url and param.url == url:
                return param
        for param in self.definitions:
            if param.code == name and (
                self.rtype in param.base or {"Resource", "DomainResource"} & set(param.base)
            ):
                return param
        return None

    def update(self) -> None:
        before = self.fhir.json("GET", f"/{self.rtype}/{self.rid}", (200,))
        body = {**self._body(), "id": self.rid}
        self.fhir.call(
            "PUT", f"/{self.rtype}/{self.rid}", (200,), json=body, headers={"Content-Type": _FHIR_JSON}
        )
        after = self.fhir.json("GET", f"/{self.rtype}/{self.rid}", (200,))
        if after.get("meta", {}).get("versionId") == before.get("meta", {}).get("versionId"):
            raise _Failed("update: meta.versionId did not change")

    def patch(self) -> None:
        operations = [{"op": "add", "path": "/language", "value": "en"}]
        headers = {"Content-Type": "application/json-patch+json"}
        self.fhir.call("PATCH", f"/{self.rtype}/{self.rid}", (200,), json=operations, headers=headers)
        if self.fhir.json("GET", f"/{self.rtype}/{self.rid}", (200,)).get("language") != "en":
            raise _Failed("patch: the change is not visible on read")

    def fhirpath_patch(self) -> None:
        # Every resource has ``language`` (a code): replace it if there, else add it.
        current = self.fhir.json("GET", f"/{self.rtype}/{self.rid}", (200,))
        if "language" in current:
            path = f"{self.rtype}.language"
            parts = [{"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": path}]
        else:
            parts = [{"name": "type", "valueCode": "add"}, {"name": "path", "valueString": self.rtype},
                     {"name": "name", "valueString": "language"}]
        parts.append({"name": "value", "valueCode": "sw"})
        body = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts}]}
        headers = {"Content-Type": _FHIR_JSON}
        self.fhir.call("PATCH", f"/{self.rtype}/{self.rid}", (200,), json=body, headers=headers)
        if self.fhir.json("GET", f"/{self.rtype}/{self.rid}", (200,)).get("language") != "sw":
            raise _Failed("patch (FHIRPath Patch): the change is not visible on read")

    def history_instance(self) -> None:
        bundle = self.fhir.json("GET", f"/{self.rtype}/{self.rid}/_history", (200,))
        if bundle.get("type") != "history" or not bundle.get("entry"):
            raise _Failed("history-instance: not a history Bundle with entries")

    def history_type(self) -> None:
        bundle = self.fhir.json("GET", f"/{self.rtype}/_history", (200,), params={"_count": "1"})
        if bundle.get("type") != "history":
            raise _Failed("history-type: not a history Bundle")

    def conditional_create(self) -> None:
        headers = {"Content-Type": _FHIR_JSON, "If-None-Exist": f"_id={self.rid}"}
        response = self.fhir.call("POST", f"/{self.rtype}", (200,), json=self._body(), headers=headers)
        location = response.headers.get("location", "")
        if location and f"/{self.rtype}/{self.rid}" not in location:
            raise _Failed("conditional create: answered with another resource")

    def delete(self) -> None:
        self.fhir.call("DELETE", f"/{self.rtype}/{self.rid}", (200, 204))
        self.fhir.call("GET", f"/{self.rtype}/{self.rid}", (410,))


def _system_checks(fhir: _Fhir, report: SuiteReport, rest: dict[str, Any], types: set[str]) -> None:
    codes = {i.get("code") for i in rest.get("interaction", [])}

    def record(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except _Failed as exc:
            report.results.append(CheckResult("", name, FAIL, str(exc)))
        else:
            report.results.append(CheckResult("", name, PASS))

    def transaction() -> None:
        urn = f"urn:uuid:{uuid.uuid4()}"
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": urn,
                    "resource": {"resourceType": "Patient", "active": True},
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": "conformance"},
                        "subject": {"reference": urn},
                    },
                    "request": {"method": "POST", "url": "Observation"},
                },
            ],
        }
        body = fhir.json("POST", "/", (200,), json=bundle, headers={"Content-Type": _FHIR_JSON})
        entries = body.get("entry", [])
        if body.get("type") != "transaction-response" or len(entries) != 2:
            raise _Failed("transaction: not a transaction-response with one entry per request")
        patient_loc = entries[0].get("response", {}).get("location", "")
        observation_loc = entries[1].get("response", {}).get("location", "")
        patient_id = patient_loc.split("Patient/", 1)[-1].split("/", 1)[0]
        observation_id = observation_loc.split("Observation/", 1)[-1].split("/")[0]
        try:
            observation = fhir.json("GET", f"/Observation/{observation_id}", (200,))
            if observation.get("subject", {}).get("reference") != f"Patient/{patient_id}":
                raise _Failed("transaction: the urn:uuid reference was not rewritten")
        finally:
            _remove(fhir, [f"Observation/{observation_id}", f"Patient/{patient_id}"])

    def batch() -> None:
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "resource": {"resourceType": "Patient", "active": True},
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "resource": {"resourceType": "Patient", "gender": "dog"},
                    "request": {"method": "POST", "url": "Patient"},
                },
            ],
        }
        body = fhir.json("POST", "/", (200,), json=bundle, headers={"Content-Type": _FHIR_JSON})
        _remove(fhir, [_reference_of(str(e.get("response", {}).get("location", ""))) for e in body.get("entry", [])])
        statuses = [str(e.get("response", {}).get("status", ""))[:1] for e in body.get("entry", [])]
        if body.get("type") != "batch-response" or statuses != ["2", "4"]:
            raise _Failed(f"batch: expected a batch-response with statuses 2xx, 4xx; got {statuses}")

    def history() -> None:
        if fhir.json("GET", "/_history", (200,), params={"_count": "1"}).get("type") != "history":
            raise _Failed("history-system: not a history Bundle")

    if "transaction" in codes and {"Patient", "Observation"} <= types:
        record("transaction", transaction)
    if "batch" in codes and "Patient" in types:
        record("batch", batch)
    if "history-system" in codes:
        record("history-system", history)


def _reference_of(location: str) -> str:
    """``Type/id`` of a ``Location`` (``[base]/Type/id/_history/n`` or relative); ``""`` when there is none."""
    parts = location.split("/_history", 1)[0].rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 and all(parts[-2:]) else ""


def _remove(fhir: _Fhir, references: list[str]) -> None:
    """Delete what a system check created (``Type/id``): the suite leaves no records of its own on the
    server it checks. A failed delete is not a verdict on the check that wrote the resource."""
    for reference in references:
        if reference.count("/") == 1 and all(reference.split("/")):
            try:
                fhir.call("DELETE", f"/{reference}", (200, 204))
            except _Failed:
                pass


def _capabilities(fhir: _Fhir, report: SuiteReport) -> dict[str, Any]:
    try:
        capability = fhir.json("GET", "/metadata", (200,))
    except _Failed as exc:
        raise SuiteError(str(exc)) from exc
    if capability.get("resourceType") != "CapabilityStatement":
        raise SuiteError("GET /metadata did not return a CapabilityStatement")
    software = capability.get("software") or {}
    report.software = f"{software.get('name', '?')} {software.get('version', '')}"
    problems = []
    if capability.get("fhirVersion") != "4.0.1":
        problems.append(f"fhirVersion is {capability.get('fhirVersion')!r}")
    if capability.get("kind") != "instance":
        problems.append("kind is not instance")
    if not any("json" in str(f) for f in capability.get("format", [])):
        problems.append("format does not list json")
    servers = [r for r in capability.get("rest", []) if r.get("mode") == "server"]
    if not servers:
        raise SuiteError("the CapabilityStatement has no rest entry with mode=server")
    status = FAIL if problems else PASS
    report.results.append(CheckResult("", "metadata", status, "; ".join(problems)))
    return capability


def _check_token(fhir: _Fhir, rtypes: list[str]) -> None:
    """Stop at once when the server refuses the token (401): every check would fail the same way."""
    if not rtypes:
        return
    url = f"/{rtypes[0]}"
    try:
        response = fhir.http.request("GET", url, params={"_count": "1"})
    except httpx.HTTPError:
        return  # the checks report transport errors one by one
    if response.status_code == 401:
        raise SuiteError(f"the server refused the token (401 to GET {url}): check --token")


def run_suite(
    base_url: str,
    token: str,
    *,
    types: set[str] | None = None,
    fixtures: Mapping[str, dict[str, Any]] | None = None,
    definitions: list[SearchParamDef] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> SuiteReport:
    """Check every interaction and search parameter ``base_url`` advertises (``types`` limits the run)."""
    report = SuiteReport(base_url=base_url.rstrip("/"))
    headers = {"Authorization": f"Bearer {token}", "Accept": _FHIR_JSON}
    fixture_set = fixtures if fixtures is not None else load_fixtures()
    params = definitions if definitions is not None else load_definitions()
    with httpx.Client(
        base_url=report.base_url, headers=headers, timeout=_TIMEOUT, transport=transport
    ) as client:
        fhir = _Fhir(client)
        capability = _capabilities(fhir, report)
        rest = next(r for r in capability["rest"] if r.get("mode") == "server")
        patch_formats = set(capability.get("patchFormat", []))
        advertised = {entry.get("type"): entry for entry in rest.get("resource", [])}
        _check_token(fhir, sorted(t for t in advertised if isinstance(t, str) and (types is None or t in types)))
        for rtype, entry in sorted(advertised.items()):
            if types is not None and rtype not in types:
                continue
            fixture = fixture_set.get(rtype)
            if fixture is None:
                report.results.append(CheckResult(rtype, "fixture", SKIP, "no fixture for this type"))
                continue
            profile = str(entry.get("profile") or "")
            if profile and not profile.startswith(_BASE_PROFILE):
                # The fixtures are base R4 examples: one need not conform to a declared profile
                # (e.g. a backport Subscription, whose criteria is a topic canonical).
                report.results.append(CheckResult(rtype, "fixture", SKIP, f"no fixture for the profile {profile}"))
                continue
            _TypeRun(fhir, report, entry, fixture, params, patch_formats).run()
        _system_checks(fhir, report, rest, set(advertised))
    return report
