"""The subscriber stand-in's state and its ASGI app (see the package docstring)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
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
    last: int = 0

    def numbers(self) -> list[int]:
        """Event numbers received, in the order they first arrived."""
        return list(self.events)

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

    def app(self) -> Starlette:
        """The ASGI app: ``POST /hook/{name}`` receives notifications."""
        return Starlette(routes=[Route("/hook/{name}", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        name = request.path_params["name"]
        receiver = self.receiver(name)
        try:
            bundle = json.loads(await request.body())
            kind, status = _check(bundle)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            with self._lock:
                receiver.malformed.append(str(exc))
            return JSONResponse({"error": str(exc)}, status_code=400)
        with self._lock:
            fault = self._faults.setdefault(name, Fault())
            if fault.fail > 0:
                fault.fail -= 1
                return Response(status_code=fault.status)
            self._keep(receiver, kind, status, bundle, dict(request.headers))
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
