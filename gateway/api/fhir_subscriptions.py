"""Subscriptions: topic-based (Subscriptions R5 Backport IG on R4) and classic R4 criteria-based ones.
The ``Subscription`` endpoints, ``$status``, and the topics as ``Basic`` resources.

A client needs ``system/Subscription.c`` to subscribe (``.r``/``.s``/``.u``/``.d`` to read, list,
change, remove); a subscription belongs to the client that created it, and another client's is
as good as unknown. Notifications carry only what the owner's scopes and data policy let it read.
These routes come ahead of the generic ones: subscriptions are not stored resources (they are
never delivered to destinations, never searched by other clients).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import invalid, not_found
from gateway.fhir import parse_json, require_resource, validate_resource
from gateway.store import SubscriptionRecord
from gateway.subscriptions import BY_BASIC_ID, BY_URL, TOPICS, SubscriptionService, resource_of

from .access_log import TemplateRoute
from .auth import authenticate, require_fhir
from .context import base_url, ctx_of
from .negotiation import check_content_type, fhir_response, read_body

TOPIC_CANONICAL = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                   "capabilitystatement-subscriptiontopic-canonical")
_DOCUMENTATION = (
    "Topic-based (backport-subscription profile: criteria is one of the topic canonicals listed here) or"
    " classic R4 criteria-based (criteria is a search such as Observation?code=http://loinc.org|1975-2: a"
    " created or updated resource of that type that matches is notified; needs read scope on the type)."
    " Channel rest-hook only. Classic: no handshake; payload absent → a POST without a body to the endpoint,"
    " payload application/fhir+json → a PUT of the resource to [endpoint]/[type]/[id] (XML is not offered)."
    " The server sets status (requested → active, error after failed sends, off after end)."
)
_STATUS_OPERATION = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status"


def _service(request: Request) -> SubscriptionService:
    return ctx_of(request).services.require_subscriptions()


async def _body(request: Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    check_content_type(request)
    data = require_resource(parse_json(await read_body(request, ctx.settings.max_body_bytes),
                                       max_depth=ctx.settings.max_json_depth))
    return validate_resource(data, expected_type="Subscription")


def _answer(request: Request, record: SubscriptionRecord, status: int = 200) -> Response:
    base = base_url(request)
    headers = {"Location": f"{base}/Subscription/{record.sid}"} if status == 201 else None
    return fhir_response(resource_of(record), status=status, headers=headers)


async def create(request: Request) -> Response:
    """``POST /fhir/Subscription``: store as requested, handshake, answer 201 (active, or error)."""
    principal = require_fhir(request, "Subscription", "c")
    record = await _service(request).create(principal, await _body(request))
    return _answer(request, record, 201)


async def read(request: Request) -> Response:
    """``GET /fhir/Subscription/{sid}``: the client's own subscription."""
    principal = require_fhir(request, "Subscription", "r")
    return _answer(request, await _service(request).get(principal, request.path_params["sid"]))


async def update(request: Request) -> Response:
    """``PUT /fhir/Subscription/{sid}``: replace it; requested/active handshake again (re-activation)."""
    principal = require_fhir(request, "Subscription", "u")
    body = await _body(request)
    return _answer(request, await _service(request).update(principal, request.path_params["sid"], body))


async def delete(request: Request) -> Response:
    """``DELETE /fhir/Subscription/{sid}``: stop and forget it."""
    principal = require_fhir(request, "Subscription", "d")
    await _service(request).delete(principal, request.path_params["sid"])
    return Response(status_code=204)


async def search(request: Request) -> Response:
    """``GET /fhir/Subscription``: the client's subscriptions (``status`` and ``criteria`` may filter)."""
    principal = require_fhir(request, "Subscription", "s")
    records = _filtered(request, await _service(request).list(principal))
    base = base_url(request)
    return fhir_response({
        "resourceType": "Bundle", "type": "searchset", "total": len(records),
        "link": [{"relation": "self", "url": f"{base}/Subscription"}],
        "entry": [{"fullUrl": f"{base}/Subscription/{r.sid}", "resource": resource_of(r), "search": {"mode": "match"}}
                  for r in records],
    })


async def status_instance(request: Request) -> Response:
    """``GET /fhir/Subscription/{sid}/$status``: a Bundle with its status Parameters."""
    principal = require_fhir(request, "Subscription", "r")
    service = _service(request)
    return fhir_response(service.status([await service.get(principal, request.path_params["sid"])]))


async def status_type(request: Request) -> Response:
    """``GET /fhir/Subscription/$status?id=…&status=…``: the status of the client's subscriptions."""
    principal = require_fhir(request, "Subscription", "r")
    service = _service(request)
    records = await service.list(principal)
    ids = {v for value in request.query_params.getlist("id") for v in value.split(",") if v}
    if ids:
        records = [r for r in records if r.sid in ids]
    return fhir_response(service.status(_filtered(request, records)))


def _filtered(request: Request, records: list[SubscriptionRecord]) -> list[SubscriptionRecord]:
    statuses = {v for value in request.query_params.getlist("status") for v in value.split(",") if v}
    criteria = request.query_params.get("criteria")
    return [r for r in records if (not statuses or r.status in statuses)
            and (criteria is None or r.content.get("criteria") == criteria)]


async def topic(request: Request) -> Response:
    """``GET /fhir/Basic/topic-{name}``: a topic as an R4 ``Basic`` resource (Backport IG)."""
    authenticate(request)
    found = BY_BASIC_ID.get(f"topic-{request.path_params['name']}")
    if found is None:
        raise not_found(f"Basic/topic-{request.path_params['name'][:64]} is not known")
    return fhir_response(found.as_basic())


async def not_allowed(request: Request) -> Response:
    """An interaction on ``Subscription`` the server does not offer (PATCH, conditional writes, history)."""
    raise invalid("Subscriptions are created, read, replaced and deleted only", ["Subscription"],
                  code="not-supported")


def advertise(capability: dict[str, Any]) -> dict[str, Any]:
    """The CapabilityStatement with the topics listed and ``Subscription`` as served here."""
    statement = dict(capability)
    rests = [dict(rest) for rest in statement.get("rest", [])]
    if rests:
        resources = []
        for resource in rests[0].get("resource", []):
            if resource.get("type") == "Subscription":
                resource = {
                    "type": "Subscription",
                    "profile": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription",
                    "documentation": _DOCUMENTATION,
                    "extension": [{"url": TOPIC_CANONICAL, "valueCanonical": t.url} for t in TOPICS],
                    "interaction": [{"code": code} for code in ("read", "create", "update", "delete", "search-type")],
                    "operation": [{"name": "status", "definition": _STATUS_OPERATION}],
                }
            resources.append(resource)
        rests[0]["resource"] = resources
        rests[0]["extension"] = [*rests[0].get("extension", []),
                                 *({"url": TOPIC_CANONICAL, "valueCanonical": url} for url in BY_URL)]
    statement["rest"] = rests
    return statement


ROUTES = [
    TemplateRoute("/fhir/Subscription/$status", status_type, methods=["GET"]),
    TemplateRoute("/fhir/Subscription/{sid}/$status", status_instance, methods=["GET"]),
    TemplateRoute("/fhir/Subscription", create, methods=["POST"]),
    TemplateRoute("/fhir/Subscription", search, methods=["GET"]),
    TemplateRoute("/fhir/Subscription", not_allowed, methods=["PUT", "PATCH", "DELETE"]),  # conditional writes
    TemplateRoute("/fhir/Subscription/_search", not_allowed, methods=["POST"]),
    TemplateRoute("/fhir/Subscription/{sid}", read, methods=["GET"]),
    TemplateRoute("/fhir/Subscription/{sid}", update, methods=["PUT"]),
    TemplateRoute("/fhir/Subscription/{sid}", delete, methods=["DELETE"]),
    TemplateRoute("/fhir/Subscription/{sid}", not_allowed, methods=["PATCH"]),
    TemplateRoute("/fhir/Subscription/{sid}/_history", not_allowed, methods=["GET"]),
    TemplateRoute("/fhir/Basic/topic-{name}", topic, methods=["GET"]),
]
