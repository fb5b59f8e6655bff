"""The subscriber stand-in's state and its ASGI app (see the package docstring)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Fault:
    """How the next notifications to one endpoint are answered."""

    fail: int = 0  # refuse this many (nothing kept)
    status: int = 500
    lose: int = 0  # keep this many, then answer 500 as if the answer was lost on the way
    delay: float = 0.0  # seconds to wait before answering the next ``delayed`` ones (kept first)
    delayed: int = 0


@dataclass
class Receiver:
    """What one endpoint received."""

    events: dict[int, dict[str, Any]] = field(default_factory=dict)  # event number -> first notification
    received_at: dict[int, float] = field(default_factory=dict)  # event number -> epoch of first receipt
    duplicates: int = 0
    order_errors: list[str] = field(default_factory=list)
    handshakes: int = 0
    heartbeats: list[dict[str, Any]] = field(default_factory=list)  # status Parameters of each
    headers: list[dict[str, str]] = field(default_factory=list)  # of every accepted post
    malformed: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # every notification as it came, for what parsing hides
    last: int = 0
    # Classic R4 rest-hook: empty POSTs, and PUTs of resources to <endpoint>/<type>/<id>.
    pings: int = 0
    puts: dict[str, dict[str, Any]] = field(default_factory=dict)  # "Type/id/_history/version" -> resource
    versions: dict[str, int] = field(default_factory=dict)  # "Type/id" -> newest version received

    def numbers(self) -> list[int]:
        """Event numbers received, in the order they first arrived."""
        return list(self.events)

    def updated(self) -> list[str]:
        """``Type/id`` of each resource version PUT, each once, in the order they first arrived."""
        return [key.split("/_history/", 1)[0] for key in self.puts]

    def focus(self) -> list[str]:
        """The focus references of the events, in event order."""
        return [ref for number in sorted(self.events) for ref in _focus(self.events[number])]


class SubscriberSandbox:
    """Receivers by endpoint name, their faults, and the app serving them."""

    def __init__(self) -> None:
        self._receivers: dict[str, Receiver] = {}
        self._faults: dict[str, Fault] = {}
        self._lock = threading.Lock()

    def receiver(self, name: str) -> Receiver:
        """The receiver of endpoint ``name`` (created on first use)."""
        with self._lock:
            return self._receivers.setdefault(name, Receiver())

    def fault(self, name: str, **changes: Any) -> None:
        """Set how the next notifications to ``name`` are answered (see ``Fault``)."""
        with self._lock:
            self._faults[name] = Fault(**changes)

    def fault_left(self, name: str) -> int:
        """How many more notifications to ``name`` will be refused."""
        with self._lock:
            fault = self._faults.get(name)
            return 0 if fault is None else fault.fail

    def app(self) -> Starlette:
        """The ASGI app: ``POST /hook/{name}`` receives notifications (a Bundle, or R4's empty ping),
        ``PUT /hook/{name}/{type}/{id}`` a resource (R4 rest-hook with a payload)."""
        return Starlette(routes=[Route("/hook/{name}", self._receive, methods=["POST"]),
                                 Route("/hook/{name}/{rtype}/{rid}", self._receive_put, methods=["PUT"])])

    async def _receive(self, request: Request) -> Response:
        name = request.path_params["name"]
        receiver = self.receiver(name)
        body = await request.body()
        if not body:  # R4 rest-hook without payload: "a POST with no body"
            return await self._answer(name, lambda: self._ping(receiver, dict(request.headers)))
        receiver.bodies.append(body)
        try:
            bundle = json.loads(body)
            kind, status = _check(bundle)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return self._malformed(receiver, exc)
        return await self._answer(name, lambda: self._keep(receiver, kind, status, bundle, dict(request.headers)))

    async def _receive_put(self, request: Request) -> Response:
        """R4 rest-hook with a payload: the server updates (PUT) the resource at [endpoint]/[type]/[id]."""
        name, rtype, rid = (request.path_params[k] for k in ("name", "rtype", "rid"))
        receiver = self.receiver(name)
        try:
            if "json" not in request.headers.get("content-type", ""):
                raise ValueError("the resource must be sent as application/fhir+json")
            resource = json.loads(await request.body())
            if resource.get("resourceType") != rtype or resource.get("id") != rid:
                raise ValueError(f"a PUT to {rtype}/{rid} carries that resource")
            version = int(resource["meta"]["versionId"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return self._malformed(receiver, exc)
        headers = dict(request.headers)
        return await self._answer(name, lambda: self._keep_put(receiver, f"{rtype}/{rid}", version, resource, headers))

    def _malformed(self, receiver: Receiver, exc: Exception) -> Response:
        with self._lock:
            receiver.malformed.append(str(exc))
        return JSONResponse({"error": str(exc)}, status_code=400)

    async def _answer(self, name: str, keep: Callable[[], None]) -> Response:
        """Keep what was received and answer, as the endpoint's fault says."""
        with self._lock:
            fault = self._faults.setdefault(name, Fault())
            if fault.fail > 0:
                fault.fail -= 1
                return Response(status_code=fault.status)
            keep()
            lose = fault.lose > 0
            if lose:
                fault.lose -= 1
            delay = fault.delay if fault.delayed > 0 else 0.0
            if delay:
                fault.delayed -= 1
        if delay:
            await asyncio.sleep(delay)
        return Response(status_code=500 if lose else 200)

    @staticmethod
    def _ping(receiver: Receiver, headers: dict[str, str]) -> None:
        receiver.headers.append(headers)
        receiver.pings += 1

    @staticmethod
    def _keep_put(receiver: Receiver, ref: str, version: int, resource: dict[str, Any],
                  headers: dict[str, str]) -> None:
        """Keep each version once (a PUT sent again is the same update); note an older version after a newer."""
        receiver.headers.append(headers)
        key = f"{ref}/_history/{version}"
        if key in receiver.puts:
            receiver.duplicates += 1
            return
        newest = receiver.versions.get(ref, 0)
        if version < newest:
            receiver.order_errors.append(f"{key} arrived after version {newest}")
        receiver.versions[ref] = max(newest, version)
        receiver.puts[key] = resource

    @staticmethod
    def _keep(receiver: Receiver, kind: str, status: dict[str, Any], bundle: dict[str, Any],
              headers: dict[str, str]) -> None:
        receiver.headers.append(headers)
        if kind == "handshake":
            receiver.handshakes += 1
            return
        if kind == "heartbeat":
            receiver.heartbeats.append(status)
            return
        for number in _event_numbers(status):
            if number in receiver.events:
                receiver.duplicates += 1
                continue
            if number != receiver.last + 1:
                receiver.order_errors.append(f"event {number} arrived after {receiver.last}")
            receiver.last = max(receiver.last, number)
            receiver.events[number] = bundle
            receiver.received_at[number] = time.time()


def _check(bundle: Any) -> tuple[str, dict[str, Any]]:
    """The notification type and status Parameters of a notification Bundle (ValueError if it is not one)."""
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "history":
        raise ValueError("a notification is a Bundle of type history")
    status = bundle["entry"][0]["resource"]
    if status.get("resourceType") != "Parameters":
        raise ValueError("the first entry of a notification is a Parameters")
    kind = _value(status, "type")
    if kind not in ("handshake", "heartbeat", "event-notification"):
        raise ValueError(f"unexpected notification type {kind!r}")
    if not _value(status, "subscription") or _value(status, "events-since-subscription-start") is None:
        raise ValueError("the status names its subscription and events-since-subscription-start")
    return kind, status


def _value(parameters: dict[str, Any], name: str) -> Any:
    for parameter in parameters.get("parameter", []):
        if parameter.get("name") == name:
            return next((v for k, v in parameter.items() if k.startswith("value")), None)
    return None


def _event_numbers(status: dict[str, Any]) -> list[int]:
    numbers = []
    for parameter in status.get("parameter", []):
        if parameter.get("name") == "notification-event":
            for part in parameter.get("part", []):
                if part.get("name") == "event-number":
                    numbers.append(int(part["valueString"]))
    return numbers


def _focus(bundle: dict[str, Any]) -> list[str]:
    status = bundle["entry"][0]["resource"]
    refs = []
    for parameter in status.get("parameter", []):
        if parameter.get("name") == "notification-event":
            refs += [p["valueReference"]["reference"] for p in parameter.get("part", []) if p.get("name") == "focus"]
    return refs
