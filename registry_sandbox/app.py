"""The client registry's HTTP API (FastAPI), with its logins and failures on demand."""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from registry_sandbox.registry import MATCH_GRADE, Json, Registry

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class Fault:
    """An error answer: ``before`` the work (nothing done) or ``after`` it (the answer is lost)."""

    status: int
    when: Literal["before", "after"] = "before"


def _outcome(status: int, code: str, text: str) -> Response:
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


def _bundle(entries: list[Json]) -> Response:
    body = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    return JSONResponse(body, media_type=FHIR_JSON)


class ClientRegistry:
    """An OpenCR-like registry; log in with HTTP Basic ``username``/``password`` or ``Bearer <token>``."""

    def __init__(self, *, username: str = "gateway", password: str = "cr-secret", token: str = "cr-token",
                 match_systems: frozenset[str] = frozenset()) -> None:
        self.registry = Registry(match_systems=match_systems)
        self.username, self.password, self.token = username, password, token
        self.faults: deque[Fault] = deque()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request

    def fail_next(self, status: int, times: int = 1, when: Literal["before", "after"] = "before") -> None:
        """Answer the next ``times`` requests with ``status``, before or after doing the work."""
        self.faults.extend(Fault(status, when) for _ in range(times))

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header == f"Bearer {self.token}":
            return True
        basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return header == f"Basic {basic}"

    def app(self) -> FastAPI:
        """The FHIR API under ``/fhir``."""
        app = FastAPI()
        registry = self.registry

        @app.middleware("http")
        async def guard(request: Request, call_next: Any) -> Response:
            self.requests.append((request.method, request.url.path))
            if not self._authorised(request):
                return _outcome(401, "login", "authentication required")
            fault = self.faults.popleft() if self.faults else None
            if fault is not None and fault.when == "before":
                return _outcome(fault.status, "transient", "injected failure")
            response: Response = await call_next(request)
            if fault is not None:
                return _outcome(fault.status, "transient", "injected failure after the work was done")
            return response

        @app.post("/fhir/Patient/$match")
        async def match(request: Request) -> Response:
            body = await _json(request)
            params = {p.get("name"): p for p in body.get("parameter") or [] if isinstance(p, dict)}
            patient = (params.get("resource") or {}).get("resource")
            if body.get("resourceType") != "Parameters" or not isinstance(patient, dict):
                return _outcome(400, "invalid", "Parameters with a resource parameter expected")
            only_certain = (params.get("onlyCertainMatches") or {}).get("valueBoolean") is True
            count = (params.get("count") or {}).get("valueInteger") or 10
            entries = [
                {"resource": golden, "search": {"mode": "match", "score": score,
                                                "extension": [{"url": MATCH_GRADE, "valueCode": grade}]}}
                for golden, score, grade in registry.match(patient)
                if grade == "certain" or not only_certain
            ]
            return _bundle(entries[:count])

        @app.post("/fhir/Patient")
        async def create(request: Request) -> Response:
            patient = await _json(request)
            if patient.get("resourceType") != "Patient":
                return _outcome(400, "invalid", "a Patient resource expected")
            unknown = _unknown_link(registry, patient)
            if unknown:
                return _outcome(400, "processing", f"Resource {unknown} not found, specified in path: {_LINK_PATH}")
            condition = request.headers.get("if-none-exist")
            if condition:
                found = _search(registry, condition.removeprefix("identifier="))
                if len(found) > 1:
                    return _outcome(412, "multiple-matches", "the If-None-Exist condition matches several records")
                if found:
                    return JSONResponse(found[0], status_code=200, media_type=FHIR_JSON,
                                        headers=_locations(registry, found[0]["id"]))
            stored = registry.create(patient)
            return JSONResponse(stored, status_code=201, media_type=FHIR_JSON,
                                headers=_locations(registry, stored["id"]))

        @app.put("/fhir/Patient/{rid}")
        async def update(rid: str, request: Request) -> Response:
            if rid not in registry.records:
                return _outcome(404, "not-found", f"Patient/{rid} is not known")
            patient = await _json(request)
            unknown = _unknown_link(registry, patient)
            if unknown:
                return _outcome(400, "processing", f"Resource {unknown} not found, specified in path: {_LINK_PATH}")
            stored = registry.update(rid, patient)
            return JSONResponse(stored, media_type=FHIR_JSON, headers=_locations(registry, rid))

        @app.get("/fhir/Patient/{rid}")
        async def read(rid: str) -> Response:
            found = registry.read(rid)
            if found is None:
                return _outcome(404, "not-found", f"Patient/{rid} is not known")
            return JSONResponse(found, media_type=FHIR_JSON)

        @app.get("/fhir/Patient")
        async def search(identifier: str) -> Response:
            return _bundle([{"resource": r, "search": {"mode": "match"}} for r in _search(registry, identifier)])

        return app


_LINK_PATH = "Patient.link.other"


def _unknown_link(registry: Registry, patient: Json) -> str | None:
    """A ``Patient.link`` to a Patient the registry does not hold: OpenCR's HAPI FHIR server checks
    references on write (referential integrity) and refuses the record."""
    for link in patient.get("link") or []:
        reference = ((link if isinstance(link, dict) else {}).get("other") or {}).get("reference")
        if isinstance(reference, str) and reference.startswith("Patient/"):
            rid = reference.removeprefix("Patient/")
            if rid not in registry.records and rid not in registry.golden:
                return reference
    return None


async def _json(request: Request) -> Json:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _search(registry: Registry, token: str) -> list[Json]:
    """Records holding the identifier ``system|value`` (or a bare ``value``)."""
    system, _, value = token.rpartition("|")
    return registry.find(system or None, value.replace("\\|", "|"))


def _locations(registry: Registry, rid: str) -> dict[str, str]:
    # OpenCR answers a submission with the record's location and its golden record's.
    return {"Location": f"Patient/{rid}", "locationCRUID": f"Patient/{registry.golden_of[rid]}"}
