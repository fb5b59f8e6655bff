"""The registry's API, one function per exchange; each answers what it learnt and the outcome.

OpenCR links every record it is given to a golden record, whose id is the client registry
unique id (CRUID): the submitted record carries ``link: [{other: Patient/<CRUID>, type:
refer}]``, and the golden record itself has no such link. ``cruid_of`` reads that.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import orjson

from gateway import jsonio
from gateway.clock import Clock
from gateway.connectors.base import DeliveryOutcome, Permanent, Retry, Success
from gateway.connectors.classify import record_request, record_response
from gateway.connectors.http import exchange

FHIR_JSON = "application/fhir+json"
_HEADERS = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"

Json = dict[str, Any]


def token(system: str, value: str) -> str:
    """A FHIR token search value ``system|value`` with FHIR's escaping."""

    def escape(text: str) -> str:
        for char in ("\\", ",", "$", "|"):
            text = text.replace(char, "\\" + char)
        return text

    return f"{escape(system)}|{escape(value)}"


def cruid_of(patient: Json) -> str | None:
    """The golden record a registry record refers to; a golden record's own id."""
    for link in patient.get("link") or []:
        reference = ((link or {}).get("other") or {}).get("reference")
        if link.get("type") == "refer" and isinstance(reference, str) and reference.startswith("Patient/"):
            return reference.removeprefix("Patient/")
    return patient.get("id") if isinstance(patient.get("id"), str) else None


def _body(response: httpx.Response) -> Json:
    try:
        value = jsonio.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _unreadable(request: httpx.Request, response: httpx.Response, detail: str) -> Permanent:
    return Permanent("cr_bad_response", record_request(request), record_response(response), detail)


class RegistryApi:
    """The exchanges with one registry at ``base_url`` (its FHIR base)."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, clock: Clock) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.clock = clock

    async def register(self, patient: Json, key: str, request_id: str) -> tuple[str | None, DeliveryOutcome]:
        """Submit ``patient`` once (conditional create on the identifier ``key``; an existing record
        is updated); the registry's id of the record."""
        url = f"{self.base_url}/Patient"
        headers = {**_HEADERS, "If-None-Exist": "identifier=" + key, "X-Request-Id": request_id}
        request = self.client.build_request("POST", url, content=jsonio.dumps(patient), headers=headers)
        response, outcome = await exchange(self.client, request, self.clock)
        if response is None or not isinstance(outcome, Success):
            return None, outcome
        location = response.headers.get("location", "")
        rid = location.split("Patient/", 1)[1].split("/", 1)[0] if "Patient/" in location else _body(response).get("id")
        if not isinstance(rid, str) or not rid:
            return None, _unreadable(request, response, "the registry named no Patient id (Location or body)")
        if response.status_code == 200:
            # An earlier attempt created it (its answer was lost) or an earlier version did: update it.
            put = self.client.build_request(
                "PUT", f"{url}/{quote(rid, safe='')}", content=jsonio.dumps({**patient, "id": rid}),
                headers={**_HEADERS, "X-Request-Id": request_id},
            )
            _, outcome = await exchange(self.client, put, self.clock)
            if not isinstance(outcome, Success):
                return None, outcome
        return rid, Success(detail=f"Patient/{rid}")

    async def read(self, rid: str) -> tuple[Json | None, DeliveryOutcome]:
        """The registry's record ``rid``."""
        request = self.client.build_request("GET", f"{self.base_url}/Patient/{quote(rid, safe='')}",
                                            headers={"Accept": FHIR_JSON})
        response, outcome = await exchange(self.client, request, self.clock)
        if response is None or not isinstance(outcome, Success):
            return None, outcome
        return _body(response), outcome

    async def search_identifier(self, system: str, value: str) -> tuple[list[Json], DeliveryOutcome]:
        """PDQm: the registry's records holding the identifier."""
        request = self.client.build_request(
            "GET", f"{self.base_url}/Patient", params={"identifier": token(system, value)},
            headers={"Accept": FHIR_JSON},
        )
        return await self._entries(request)

    async def match(self, patient: Json) -> tuple[list[Json], DeliveryOutcome]:
        """``Patient/$match`` with ``onlyCertainMatches``: the registry's certain matches."""
        parameters = {"resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": patient},
            {"name": "onlyCertainMatches", "valueBoolean": True},
            {"name": "count", "valueInteger": 2},
        ]}  # fmt: skip
        request = self.client.build_request(
            "POST", f"{self.base_url}/Patient/$match", content=jsonio.dumps(parameters), headers=_HEADERS
        )
        entries, outcome = await self._entries(request)
        certain = [
            entry for entry in entries
            if any(ext.get("url") == MATCH_GRADE and ext.get("valueCode") == "certain"
                   for ext in ((entry.get("search") or {}).get("extension") or []) if isinstance(ext, dict))
        ]  # fmt: skip
        return certain, outcome

    async def _entries(self, request: httpx.Request) -> tuple[list[Json], DeliveryOutcome]:
        response, outcome = await exchange(self.client, request, self.clock)
        if response is None or not isinstance(outcome, Success):
            return [], outcome
        body = _body(response)
        if body.get("resourceType") != "Bundle":
            return [], _unreadable(request, response, "a Bundle was expected")
        entries = [e for e in body.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
        return entries, outcome


def not_linked() -> Retry:
    """The registry holds the record but has not linked it to a golden record (yet)."""
    return Retry(None, "cr_not_linked", link_ok=True)
