"""The audit middleware: one ``AccessRecord`` per request to /fhir, /ingest and /admin.

A pure ASGI middleware (no per-request task or body copy): it classifies the request by
method and path, puts a record in the ASGI scope for the handlers to add to
(``note_of(request)``: the client, the resources and patients touched, the search
parameters), notes the status of the response (a crash is an outcome 8) and hands the
record to the process's ``AuditWriter``, which writes it later, off the request path.

The operator console's pages and actions (``/console/...``) are recorded like the admin
endpoints they mirror. Not audited: the health probes, ``/fhir/metadata``, the API docs and the
console's login form, files and self-refreshing tables (no data, or seen on its pages already). Never
recorded: headers (so no Authorization), request and response bodies. The query string is
kept for searches, histories and admin listings only, minus parameters that look like
credentials.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.request_state import principal_of
from gateway.audit import AccessRecord
from gateway.ingest import RecordResult
from gateway.store import StoredResource

SCOPE_KEY = "gateway.audit"
_MAX_QUERY = 2000
_PATH_ID = re.compile(r"^[A-Za-z0-9\-._]{1,64}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
# Parameters never written down even where the query is kept: credentials have no place in a URL,
# but a client that put one there must not find it in the audit trail.
_SECRET_PARAM = re.compile(r"token|secret|password|passwd|credential|api[-_]?key|assertion", re.IGNORECASE)
_ADMIN = {
    # (method, path pattern) -> (action code, AuditEvent.action, entity kind of the path parameter)
    ("GET", "quarantine"): ("quarantine-list", "R", None),
    ("GET", "quarantine/*"): ("quarantine-read", "R", "quarantine"),
    ("POST", "quarantine/replay"): ("quarantine-replay", "E", None),
    ("POST", "quarantine/*/replay"): ("quarantine-replay", "E", "quarantine"),
    ("POST", "quarantine/*/discard"): ("quarantine-discard", "D", "quarantine"),
    ("POST", "mappings/reload"): ("mappings-reload", "E", None),
    ("POST", "reload"): ("config-reload", "E", None),
    ("GET", "destinations"): ("destination-status", "R", None),
    ("POST", "destinations/*/pause"): ("destination-pause", "E", "destination"),
    ("POST", "destinations/*/resume"): ("destination-resume", "E", "destination"),
    ("GET", "dead-letters"): ("dead-letter-list", "R", None),
    ("GET", "dead-letters/*"): ("dead-letter-read", "R", "dead-letter"),
    ("POST", "dead-letters/replay"): ("dead-letter-replay", "E", None),
    ("POST", "dead-letters/purge"): ("dead-letter-purge", "D", None),
    ("POST", "dead-letters/*/replay"): ("dead-letter-replay", "E", "dead-letter"),
    ("GET", "identity/reviews"): ("identity-review-list", "R", None),
    ("GET", "identity/reviews/*"): ("identity-review-read", "R", "identity-review"),
    ("POST", "identity/reviews/*/accept"): ("identity-accept", "U", "identity-review"),
    ("POST", "identity/reviews/*/reject"): ("identity-reject", "U", "identity-review"),
    ("POST", "identity/unlink"): ("identity-unlink", "U", None),
    ("POST", "identity/merge"): ("identity-merge", "U", None),
    ("POST", "identity/unmerge"): ("identity-unmerge", "U", None),
}
#: Console paths with no data and no action: its files, the login form, and the tables htmx refreshes.
_CONSOLE_UNAUDITED = frozenset({"static", "live", "login"})
_WRITES = {"POST": ("create", "C"), "PUT": ("update", "U"), "PATCH": ("patch", "U"), "DELETE": ("delete", "D")}
_INSTANCE = {"GET": ("read", "R"), "PUT": ("update", "U"), "PATCH": ("patch", "U"), "DELETE": ("delete", "D")}
_QUERIED = {"search-type", "history-system", "history-type", "history-instance", "operation"}


def note_of(request: Request) -> AccessRecord | None:
    """The audit record of this request (None when auditing is off or the path is not audited)."""
    record: AccessRecord | None = request.scope.get(SCOPE_KEY)
    return record


def note_resources(request: Request, resources: list[StoredResource], limit: int) -> None:
    """Note up to ``limit`` resources returned or written, with the patients they concern."""
    record = request.scope.get(SCOPE_KEY)
    if record is not None:
        for res in resources[:limit]:
            record.touched(res.type, res.id, res.version, res.content)


def note_patients(request: Request, resources: list[StoredResource], limit: int) -> None:
    """Note the patients up to ``limit`` resources concern (a search lists its query and patients, as
    BALP's Query does, not every resource it returned)."""
    record = request.scope.get(SCOPE_KEY)
    if record is not None:
        for res in resources[:limit]:
            record.concerning(res.type, res.id, res.content)


def note_records(request: Request, results: list[RecordResult], limit: int) -> None:
    """Note the resources ingested records wrote (the Patients among them are the patients concerned)."""
    record = request.scope.get(SCOPE_KEY)
    if record is not None:
        written = [w for result in results for w in result.resources if w.change != "unchanged"]
        for w in written[:limit]:
            record.touched(w.type, w.id, int(w.version) if w.version.isdigit() else None)


def note_query(request: Request, items: list[tuple[str, str]]) -> None:
    """Note the search parameters the server used (never a body, never a credential)."""
    record = request.scope.get(SCOPE_KEY)
    if record is not None:
        record.query = _clean_query(items)


class AuditMiddleware:
    """Records every audited request with the process's ``AuditWriter`` (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request, then hand its record to the audit writer."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = getattr(scope["app"].state, "ctx", None)
        writer = ctx.services.audit if ctx is not None else None
        kind = classify(scope["method"], scope["path"]) if writer is not None else None
        if kind is None or writer is None:
            await self.app(scope, receive, send)
            return
        interaction, action, rest, target = kind
        client = scope.get("client")
        record = AccessRecord(time.time(), interaction, action, rest, address=client[0] if client else None)
        scope[SCOPE_KEY] = record

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            _complete(record, scope, target)
            await writer.record(record)


def _complete(record: AccessRecord, scope: Scope, target: tuple[str, str] | None) -> None:
    """What the path says when the handler did not get as far as noting it (a 403, 404, 410, 429 or a crash)."""
    if record.client is None:
        # Authenticated by the rate limit before a handler ran (a 429): still the client's request.
        principal = principal_of(scope)
        if principal is not None:
            record.client = principal.name
    # A handler that noted resources noted the one the path names (a read, a write): no check needed.
    if target is not None and not (record.rest and record.resources) and _PATH_ID.match(target[1]):
        kind, name = target
        if not record.rest:
            record.objects.append((kind, name))
        elif _TYPE.match(kind):
            record.touched(kind, name)
    if record.query is None and (record.interaction in _QUERIED or record.action == "R" and not record.rest):
        raw = scope.get("query_string", b"")
        if raw:
            record.query = _clean_query(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))


def _clean_query(items: list[tuple[str, str]]) -> str:
    return urlencode([(k, v) for k, v in items if not _SECRET_PARAM.search(k)])[:_MAX_QUERY]


@lru_cache(maxsize=4096)  # hot paths (a partner reading the same resources) are classified once
def classify(method: str, path: str) -> tuple[str, str, bool, tuple[str, str] | None] | None:
    """(interaction code, action, FHIR REST?, (type or entity kind, id) named by the path), or None
    for what is not audited."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    head, rest = parts[0], parts[1:]
    if head == "fhir":
        return _fhir(method, rest)
    if head == "ingest" and len(rest) == 1 and method == "POST":
        return "ingest", "C", False, ("source", rest[0])
    if head == "admin" and rest:
        return _admin(method, rest)
    if head == "console" and rest and rest[0] not in _CONSOLE_UNAUDITED:
        # The console's pages and actions mirror the admin API's paths, and are recorded as those are.
        return _admin(method, rest)
    return None


def _fhir(method: str, parts: list[str]) -> tuple[str, str, bool, tuple[str, str] | None] | None:
    n = len(parts)
    if n == 0:
        return ("transaction", "E", True, None) if method == "POST" else None
    rtype = parts[0]
    if n == 1:
        if rtype == "metadata":
            return None
        if rtype == "_history":
            return "history-system", "R", True, None
        if method == "GET":
            return "search-type", "E", True, None
        interaction, action = _WRITES.get(method, ("operation", "E"))
        return interaction, action, True, None
    rid = parts[1]
    if n == 2:
        if rid == "_search":
            return "search-type", "E", True, None
        if rid == "_history":
            return "history-type", "R", True, None
        interaction, action = _INSTANCE.get(method, ("operation", "E"))
        return interaction, action, True, (rtype, rid)
    if parts[2] == "_history":
        return ("history-instance" if n == 3 else "vread"), "R", True, (rtype, rid)
    return "operation", "E", True, (rtype, rid)


def _admin(method: str, parts: list[str]) -> tuple[str, str, bool, tuple[str, str] | None]:
    fixed = "/".join(parts)
    found = _ADMIN.get((method, fixed))
    name = parts[1] if len(parts) > 1 else None
    if found is None and name is not None:
        found = _ADMIN.get((method, "/".join([parts[0], "*", *parts[2:]])))
    if found is None and len(parts) > 2:  # a collection one level down: identity/reviews/{id}
        name = parts[2]
        found = _ADMIN.get((method, "/".join([*parts[:2], "*", *parts[3:]])))
    if found is None:  # an admin endpoint without its own code yet: still recorded
        return f"admin-{method.lower()}", "R" if method == "GET" else "E", False, None
    code, action, kind = found
    return code, action, False, (kind, name) if kind is not None and name is not None else None

