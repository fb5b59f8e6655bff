"""A real FHIR-ish HTTP server on loopback, with a scripted fault schedule, for delivery tests.

It runs its own asyncio loop in a thread (so its hangs never stall the code under test),
speaks HTTP/1.1 with keep-alive, stores resources by type and id (PUT is idempotent, as on
a real FHIR server), and records every request and every write it applied. Faults:

* ``ok``: apply and answer 200/201;
* ``503`` / ``500``: answer the status, apply nothing;
* ``429``: answer 429 with ``Retry-After: 1``;
* ``reset``: drop the connection (TCP RST) without an answer;
* ``timeout``: hang past the client's timeout, apply nothing;
* ``timeout_applied``: apply, then hang: the write happened but the answer is lost;
* ``422``: answer 422 with an OperationOutcome;
* ``422_echo``: the same, its diagnostics echoing the request's headers (as some servers do).

``outage(True)`` closes the listening socket and every open connection (connection
refused), ``outage(False)`` listens on the same port again.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

REASONS = {
    200: "OK",
    201: "Created",
    404: "Not Found",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the server saw it."""

    at: float
    method: str
    path: str
    request_id: str
    version: int
    fault: str

    @property
    def ref(self) -> str:
        """``Type/id`` from the path."""
        return "/".join(self.path.strip("/").split("/")[-2:])

    @property
    def seq(self) -> int:
        """The change seq from the job id in ``X-Request-Id``."""
        return int(self.request_id.rpartition(":")[2] or 0)


Plan = Callable[[int, Request], str]


def always_ok(index: int, request: Request) -> str:
    """No faults."""
    return "ok"


@dataclass
class LoopbackFhirServer:
    """See the module docstring."""

    plan: Plan = always_ok
    hang: float = 1.0
    latency: float = 0.0  # seconds between applying a write and answering
    port: int = 0
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    applied: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="loopback-fhir")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._count = 0

    @property
    def url(self) -> str:
        """The FHIR base URL."""
        return f"http://127.0.0.1:{self.port}/fhir"

    def start(self) -> LoopbackFhirServer:
        """Listen on a free loopback port."""
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        """Stop listening, end every connection and the thread."""
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def outage(self, down: bool) -> None:
        """Refuse connections (down) or accept them again."""
        self._call(self._close() if down else self._listen())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._serve, sock=sock)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()

    async def _shutdown(self) -> None:
        await self._close()
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- bookkeeping, read by tests -------------------------------------------------------

    def applied_counts(self) -> Counter[tuple[str, int]]:
        """How often each (ref, version) was written."""
        with self.lock:
            return Counter((r.ref, r.version) for r in self.applied)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The stored resources by ``Type/id``."""
        with self.lock:
            return dict(self.resources)

    # -- HTTP ---------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._handle(method, path, headers, body, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        probe = Request(
            time.time(),
            method,
            path,
            headers.get("x-request-id", ""),
            int(headers.get("x-gateway-version", "0")),
            "",
        )
        with self.lock:
            index = self._count
            self._count += 1
        fault = self.plan(index, probe)
        request = Request(probe.at, method, path, probe.request_id, probe.version, fault)
        with self.lock:
            self.requests.append(request)
        if fault == "reset":
            writer.transport.abort()
            return False
        if fault in ("timeout", "timeout_applied"):
            if fault == "timeout_applied":
                self._apply(request, body)
            await asyncio.sleep(self.hang)
            writer.transport.abort()
            return False
        if fault in ("503", "500"):
            return await self._respond(writer, int(fault), b"")
        if fault == "429":
            return await self._respond(writer, 429, b"", {"Retry-After": "1"})
        if fault in ("422", "422_echo"):
            issue = {"severity": "error", "code": "invalid"}
            if fault == "422_echo":
                issue["diagnostics"] = f"rejected request with headers {headers}"
            outcome = {"resourceType": "OperationOutcome", "issue": [issue]}
            return await self._respond(writer, 422, orjson.dumps(outcome))
        status = self._apply(request, body)
        if self.latency:
            await asyncio.sleep(self.latency)
        return await self._respond(writer, status, b"")

    def _apply(self, request: Request, body: bytes) -> int:
        with self.lock:
            self.applied.append(request)
            if request.method == "DELETE":
                return 200 if self.resources.pop(request.ref, None) is not None else 404
            created = request.ref not in self.resources
            self.resources[request.ref] = orjson.loads(body)
            return 201 if created else 200

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict[str, str] | None = None
    ) -> bool:
        head = [
            f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
            "Content-Type: application/fhir+json",
            f"Content-Length: {len(body)}",
        ]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        return True
