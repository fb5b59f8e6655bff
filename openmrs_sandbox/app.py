"""The OpenMRS FHIR2 module stand-in: ``/openmrs/ws/fhir2/R4/…`` over one in-memory site.

Behaviour written from the module's documented rules (``../shared/apis/openmrs.md``):

* HTTP Basic login (the OpenMRS REST API's); 401 without it.
* ``POST /{type}`` creates with a server-assigned UUID; a client ``id`` is ignored.
* ``PUT /{type}/{id}``: the body's id must equal the URL's (400); an unknown id is 404,
  except for a metadata type listed in ``fhir2.upsert.supported.resources`` (created, 201).
* ``DELETE`` voids: later reads answer 410 Gone; unknown ids 404.
* Read-only types (ServiceRequest, MedicationRequest, …) answer 405 to writes; there is no
  transaction/batch endpoint (405).
* Refusals are OperationOutcomes (400 malformed, 422 OpenMRS validation).

``POST /sandbox/lose-next`` makes the next N creates or updates be carried out and their
answers lost (a 504 from the proxy in front, the way a timed-out nginx answers);
``GET /sandbox/state`` lists what is stored, for tests.
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from openmrs_sandbox.site import ENCOUNTER_TYPE_SYSTEM, Site, reference_site
from openmrs_sandbox.translate import READ_ONLY, WRITERS, Json, Refused, identified

BASE = "/openmrs/ws/fhir2/R4"
FHIR_JSON = "application/fhir+json"
_TYPE = re.compile(r"^[A-Z][A-Za-z]+$")


@dataclass(slots=True)
class Stored:
    """One object of the site, as FHIR."""

    resource: Json
    voided: bool = False
    version: int = 1


@dataclass(slots=True)
class OpenMrs:
    """The state of the stand-in: the site's metadata, what clients wrote, and faults on demand."""

    site: Site
    username: str = "admin"
    password: str = "Admin123"
    objects: dict[tuple[str, str], Stored] = field(default_factory=dict)
    lose_next: int = 0  # writes to carry out whose answer is then lost
    requests: list[str] = field(default_factory=list)  # "METHOD path" of every authenticated request

    def __post_init__(self) -> None:
        for location, name in self.site.locations.items():
            self.objects[("Location", location)] = Stored({"resourceType": "Location", "id": location, "name": name})

    def exists(self, rtype: str, rid: str) -> bool:
        """True if ``rtype/rid`` is a live object here."""
        found = self.objects.get((rtype, rid))
        return found is not None and not found.voided

    def live(self, rtype: str) -> list[Json]:
        """The live objects of one type."""
        return [s.resource for (t, _), s in self.objects.items() if t == rtype and not s.voided]


def _outcome(status: int, message: str, expression: str | None = None, code: str = "processing") -> JSONResponse:
    issue: Json = {"severity": "error", "code": code, "diagnostics": message}
    if expression:
        issue["expression"] = [expression]
    return JSONResponse(
        {"resourceType": "OperationOutcome", "issue": [issue]}, status_code=status, media_type=FHIR_JSON
    )


def _fhir(resource: Json, status: int = 200, location: str | None = None) -> JSONResponse:
    headers = {"Location": location} if location else None
    return JSONResponse(resource, status_code=status, media_type=FHIR_JSON, headers=headers)


def create_app(state: OpenMrs | None = None) -> FastAPI:
    """The stand-in's ASGI app over ``state`` (a reference-application site by default)."""
    openmrs = state or OpenMrs(reference_site())
    app = FastAPI(title="OpenMRS FHIR2 stand-in", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.openmrs = openmrs

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user, openmrs.username) and secrets.compare_digest(password, openmrs.password)

    @app.middleware("http")
    async def login(request: Request, call_next: Any) -> Response:
        if request.url.path.startswith(BASE):
            if not authorised(request):
                response = _outcome(401, "User is not logged in", code="login")
                response.headers["WWW-Authenticate"] = 'Basic realm="OpenMRS at http://openmrs"'
                return response
            openmrs.requests.append(f"{request.method} {request.url.path}")
        result: Response = await call_next(request)
        return result

    async def body_of(request: Request, rtype: str) -> Json:
        try:
            body = await request.json()
        except ValueError as exc:
            raise Refused(400, "The request body is not valid JSON") from exc
        if not isinstance(body, dict) or body.get("resourceType") != rtype:
            raise Refused(400, f"The body is not a {rtype} resource", "resourceType")
        return body

    def lost(response: JSONResponse) -> JSONResponse:
        if openmrs.lose_next > 0:
            openmrs.lose_next -= 1
            return _outcome(504, "Gateway Time-out", code="timeout")
        return response

    def writable(rtype: str) -> None:
        if rtype in READ_ONLY:
            raise Refused(405, f"{rtype} cannot be created or updated through this server (read-only)")
        if rtype not in WRITERS:
            raise Refused(404, f"Unknown resource type '{rtype}'")

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        code = {405: "not-supported", 404: "not-found", 410: "deleted"}.get(exc.status, "processing")
        return _outcome(exc.status, exc.message, exc.expression, code=code)

    @app.post(BASE)
    @app.post(BASE + "/")
    async def transaction() -> JSONResponse:
        raise Refused(405, "This server does not support transaction or batch Bundles")

    @app.post(BASE + "/{rtype}")
    async def create(rtype: str, request: Request) -> JSONResponse:
        writable(rtype)
        body = await body_of(request, rtype)
        resource = identified(WRITERS[rtype](body, openmrs.site, openmrs.exists), str(uuid.uuid4()))
        openmrs.objects[(rtype, resource["id"])] = Stored(resource)
        return lost(_fhir(resource, 201, f"{request.base_url}{BASE[1:]}/{rtype}/{resource['id']}"))

    @app.put(BASE + "/{rtype}/{rid}")
    async def update(rtype: str, rid: str, request: Request) -> JSONResponse:
        writable(rtype)
        body = await body_of(request, rtype)
        if not body.get("id"):
            raise Refused(400, f"{rtype} resource is missing id.", "id")
        if body["id"] != rid:
            raise Refused(400, f"{rtype} id and provided id do not match", "id")
        current = openmrs.objects.get((rtype, rid))
        if current is None and rtype not in openmrs.site.upsert_resources:
            raise Refused(404, f"Resource of type {rtype} with ID {rid} is not known")
        if current is not None and current.voided:
            raise Refused(410, f"Resource of type {rtype} with ID {rid} is gone/deleted")
        resource = identified(WRITERS[rtype](body, openmrs.site, openmrs.exists), rid)
        if current is None:
            openmrs.objects[(rtype, rid)] = Stored(resource)
            return lost(_fhir(resource, 201))
        current.resource, current.version = resource, current.version + 1
        return lost(_fhir(resource))

    @app.get(BASE + "/{rtype}/{rid}")
    async def read(rtype: str, rid: str) -> JSONResponse:
        found = openmrs.objects.get((rtype, rid))
        if found is None:
            raise Refused(404, f"Resource of type {rtype} with ID {rid} is not known")
        if found.voided:
            raise Refused(410, f"Resource of type {rtype} with ID {rid} is gone/deleted")
        return _fhir(found.resource)

    @app.delete(BASE + "/{rtype}/{rid}")
    async def delete(rtype: str, rid: str) -> JSONResponse:
        writable(rtype)
        found = openmrs.objects.get((rtype, rid))
        if found is None or found.voided:
            raise Refused(404, f"Resource of type {rtype} with ID {rid} is not known")
        found.voided = True
        return _outcome(200, "Successfully deleted", code="informational")

    @app.get(BASE + "/{rtype}")
    async def search(rtype: str, request: Request) -> JSONResponse:
        if not _TYPE.match(rtype) or (rtype not in WRITERS and rtype not in READ_ONLY and rtype != "Location"):
            raise Refused(404, f"Unknown resource type '{rtype}'")
        matches = openmrs.live(rtype)
        for name, value in request.query_params.multi_items():
            if name in ("_count", "_format"):
                continue
            test = SEARCHES.get(rtype, {}).get(name)
            if test is None:
                raise Refused(
                    400,
                    f"Invalid request: The FHIR endpoint on this server does not know how to handle"
                    f" GET operation[{rtype}] with parameters [[{name}]]",
                )
            matches = [r for r in matches if test(r, value)]
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "entry": [{"fullUrl": f"{BASE}/{rtype}/{r['id']}", "resource": r} for r in matches],
        }
        return _fhir(bundle)

    @app.post("/sandbox/lose-next")
    async def lose_next(count: int = 1) -> Json:
        openmrs.lose_next = count
        return {"lose_next": count}

    @app.get("/sandbox/state")
    async def state_of() -> Json:
        return {rtype: openmrs.live(rtype) for rtype in ("Patient", "Encounter", "Observation", "Task")}

    return app


def _ref_is(field_name: str, rtype: str) -> Any:
    def test(resource: Json, value: str) -> bool:
        wanted = value if "/" in value else f"{rtype}/{value}"
        return str((resource.get(field_name) or {}).get("reference")) == wanted

    return test


def _identifier(resource: Json, value: str) -> bool:
    system, bar, code = value.rpartition("|")
    return any(
        item.get("value") == code
        and (not bar or item.get("system") == system or (item.get("type") or {}).get("text") == system)
        for item in resource.get("identifier") or []
    )


def _coded(path: str, system: str | None = None) -> Any:
    def test(resource: Json, value: str) -> bool:
        wanted_system, bar, code = value.rpartition("|")
        concepts = resource.get(path)
        items = concepts if isinstance(concepts, list) else [concepts or {}]
        return any(
            c.get("code") == code and (not bar or c.get("system") == wanted_system)
            for item in items
            for c in item.get("coding") or []
            if system is None or c.get("system") in (system, None)
        )

    return test


def _date(resource: Json, value: str) -> bool:
    """A date search on the encounter start or effective time: ``eq`` (default), ``ge`` or ``le``, at the
    precision of the value given (``2024-05-13`` matches any time that day)."""
    when = str((resource.get("period") or {}).get("start") or resource.get("effectiveDateTime") or "")
    prefix, wanted = (value[:2], value[2:]) if value[:2] in ("eq", "ge", "le") else ("eq", value)
    head = when[: len(wanted)]
    return {"eq": head == wanted, "ge": head >= wanted, "le": head <= wanted}[prefix]


SEARCHES: dict[str, dict[str, Any]] = {
    "Patient": {"identifier": _identifier, "_id": lambda r, v: r["id"] == v},
    "Encounter": {"subject": _ref_is("subject", "Patient"), "patient": _ref_is("subject", "Patient"),
                  "type": _coded("type", ENCOUNTER_TYPE_SYSTEM), "date": _date, "_id": lambda r, v: r["id"] == v},
    "Observation": {"subject": _ref_is("subject", "Patient"), "patient": _ref_is("subject", "Patient"),
                    "code": _coded("code"), "encounter": _ref_is("encounter", "Encounter"), "date": _date,
                    "_id": lambda r, v: r["id"] == v},
    "Task": {"patient": _ref_is("for", "Patient"), "_id": lambda r, v: r["id"] == v},
    "Location": {"_id": lambda r, v: r["id"] == v},
}  # fmt: skip
