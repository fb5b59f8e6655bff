"""Reading an R4 Subscription into what the gateway acts on: a topic-based one (Backport IG profile,
``criteria`` a topic canonical) or a classic R4 criteria-based one (``criteria`` a search).

Every problem is a 400 ``FhirError`` whose expression names the element (``Subscription.criteria``,
``Subscription.channel.endpoint`` …), so a client can fix its request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from gateway.errors import invalid
from gateway.search import QueryParser, SearchError
from gateway.subscriptions.criteria import criteria_topic, is_search
from gateway.subscriptions.topics import BY_URL, Topic

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER_CRITERIA = BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
HEARTBEAT_PERIOD = BACKPORT + "backport-heartbeat-period"
TIMEOUT = BACKPORT + "backport-timeout"
MAX_COUNT = BACKPORT + "backport-max-count"
CONTENTS = ("empty", "id-only", "full-resource")
MIME_TYPES = ("application/fhir+json", "application/json")
CLIENT_STATUSES = ("requested", "active", "off")
#: R4 core: a client may send any status (the official examples include ``error``); the server sets it.
R4_STATUSES = ("requested", "active", "error", "off")
XML_TYPES = ("application/fhir+xml", "application/xml")
BACKPORT_PROFILE = BACKPORT + "backport-subscription"
_MAX_HEADERS = 10


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """What one Subscription asks for."""

    topic: Topic
    filters: tuple[tuple[str | None, tuple[tuple[str, str], ...]], ...]  # (resource type or None: any, params)
    endpoint: str
    headers: Mapping[str, str]
    content: str  # empty | id-only | full-resource
    heartbeat_period: int | None
    timeout: int | None
    status: str  # as the client asked: requested | active | off
    classic: bool = False  # R4 core criteria-based: no handshake or heartbeat, R4 rest-hook payloads
    payload: str | None = "application/fhir+json"  # classic: None → an empty POST, else a PUT of the resource
    end: datetime | None = None  # when the server switches it off

    def filter_items(self, resource_type: str) -> list[tuple[str, str]]:
        """The search parameters the filters add for a change of ``resource_type`` (ANDed)."""
        allowed = self.topic.filters.get(resource_type, ())
        return [(name, value) for rtype, params in self.filters for name, value in params
                if rtype == resource_type or (rtype is None and name in allowed)]


def read_spec(
    resource: Mapping[str, Any], parser: QueryParser | None, *, allow_http: bool = True, min_heartbeat: float = 0.0
) -> SubscriptionSpec:
    """Check a client's Subscription and read it (400 naming the element when it cannot be used);
    without ``parser`` the filters' values are not checked again (a stored subscription's were)."""
    if resource.get("resourceType") != "Subscription":
        raise invalid("the body must be a Subscription", ["Subscription.resourceType"])
    criteria = _string(resource.get("criteria"), "Subscription.criteria")
    end = _end(resource.get("end"))
    if is_search(criteria) and not _claims_backport(resource):
        return _classic(resource, criteria_topic(criteria, parser), allow_http, end)
    topic = BY_URL.get(criteria)
    if topic is None:
        raise invalid(f"criteria must be one of the topic canonicals this server offers: {', '.join(sorted(BY_URL))}"
                      " (or, without the backport profile, an R4 search such as Observation?code=…)",
                      ["Subscription.criteria"], code="not-supported")
    status = resource.get("status", "requested")
    if status not in CLIENT_STATUSES:
        raise invalid(f"status must be one of {', '.join(CLIENT_STATUSES)}", ["Subscription.status"])
    channel, endpoint = _rest_hook(resource, allow_http)
    mime = channel.get("payload", "application/fhir+json")
    if mime not in MIME_TYPES:
        raise invalid("payload must be application/fhir+json", ["Subscription.channel.payload"], code="not-supported")
    content = _extension(channel.get("_payload"), PAYLOAD_CONTENT, "valueCode") or "id-only"
    if content not in CONTENTS:
        raise invalid(f"payload content must be one of {', '.join(CONTENTS)}",
                      ["Subscription.channel.payload.extension('backport-payload-content')"], code="not-supported")
    heartbeat = _positive(_extension(channel, HEARTBEAT_PERIOD, "valueUnsignedInt"), "backport-heartbeat-period")
    if heartbeat is not None and heartbeat < min_heartbeat:
        raise invalid(f"heartbeat-period must be at least {min_heartbeat:g} seconds",
                      ["Subscription.channel.extension('backport-heartbeat-period')"])
    timeout = _positive(_extension(channel, TIMEOUT, "valueUnsignedInt"), "backport-timeout")
    return SubscriptionSpec(
        topic=topic,
        filters=_filters(resource.get("_criteria"), topic, parser),
        endpoint=endpoint,
        headers=_headers(channel.get("header")),
        content=content,
        heartbeat_period=heartbeat,
        timeout=timeout,
        status=status,
        end=end,
    )


def _classic(resource: Mapping[str, Any], topic: Topic, allow_http: bool, end: datetime | None) -> SubscriptionSpec:
    """An R4 core criteria-based Subscription: R4's rest-hook, no backport extensions."""
    status = resource.get("status", "requested")
    if status not in R4_STATUSES:
        raise invalid(f"status must be one of {', '.join(R4_STATUSES)}", ["Subscription.status"])
    channel, endpoint = _rest_hook(resource, allow_http)
    payload = channel.get("payload")
    if payload in XML_TYPES:
        raise invalid("the gateway sends JSON only: payload must be application/fhir+json, or absent for a"
                      " notification without a body", ["Subscription.channel.payload"], code="not-supported")
    if payload is not None and payload not in MIME_TYPES:
        raise invalid("payload must be application/fhir+json, or absent for a notification without a body",
                      ["Subscription.channel.payload"], code="not-supported")
    return SubscriptionSpec(
        topic=topic, filters=(), endpoint=endpoint, headers=_headers(channel.get("header")),
        content="full-resource" if payload else "empty", heartbeat_period=None, timeout=None,
        status="off" if status == "off" else "requested", classic=True, payload=payload, end=end,
    )


def _claims_backport(resource: Mapping[str, Any]) -> bool:
    meta = resource.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    return isinstance(profiles, list) and BACKPORT_PROFILE in profiles


def _rest_hook(resource: Mapping[str, Any], allow_http: bool) -> tuple[Mapping[str, Any], str]:
    """The channel and its endpoint (400 unless a rest-hook to an absolute URL)."""
    channel = resource.get("channel")
    if not isinstance(channel, dict):
        raise invalid("a Subscription needs a channel", ["Subscription.channel"])
    if channel.get("type") != "rest-hook":
        raise invalid(f"channel type {str(channel.get('type'))[:32]!r} is not supported: only rest-hook is"
                      " (not websocket, email, sms or message)", ["Subscription.channel.type"], code="not-supported")
    endpoint = _string(channel.get("endpoint"), "Subscription.channel.endpoint")
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises for a port that is no number
    except ValueError as exc:  # an unclosed IPv6 bracket, a port that is no number
        raise invalid(f"the endpoint is not a URL: {exc}", ["Subscription.channel.endpoint"]) from exc
    if parts.scheme not in (("http", "https") if allow_http else ("https",)) or not parts.netloc:
        raise invalid("the endpoint must be an absolute " + ("http(s)" if allow_http else "https") + " URL",
                      ["Subscription.channel.endpoint"])
    return channel, endpoint


def _end(value: Any) -> datetime | None:
    """``Subscription.end``: an instant (with its time zone)."""
    if value is None:
        return None
    end: datetime | None = None
    if isinstance(value, str):
        # A leap second (FHIR's instant allows :60, as on 2016-12-31) ends at the next second.
        leap = len(value) >= 19 and value[10:11] == "T" and value[17:19] == "60"
        try:
            end = datetime.fromisoformat(value[:17] + "59" + value[19:] if leap else value)
        except ValueError:
            end = None
        if end is not None and leap:
            end += timedelta(seconds=1)
    if end is None or end.tzinfo is None:
        raise invalid("end must be an instant with a time zone (2026-12-31T00:00:00Z)", ["Subscription.end"])
    return end


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"{where.rsplit('.', 1)[-1]} is required (a string)", [where])
    return value.strip()


def _extension(element: Any, url: str, key: str) -> Any:
    if not isinstance(element, dict):
        return None
    for extension in element.get("extension") or ():
        if isinstance(extension, dict) and extension.get("url") == url:
            return extension.get(key)
    return None


def _positive(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise invalid(f"{name} must be a positive integer (seconds)",
                      [f"Subscription.channel.extension('{name}')"])
    return value


#: Characters of one header value (servers commonly refuse a header block past 8 KB).
_MAX_HEADER_VALUE = 4096


def _headers(values: Any) -> dict[str, str]:
    if values is None:
        return {}
    if not isinstance(values, list) or len(values) > _MAX_HEADERS:
        raise invalid(f"header is a list of at most {_MAX_HEADERS} 'Name: value' strings",
                      ["Subscription.channel.header"])
    headers: dict[str, str] = {}
    for index, value in enumerate(values):
        name, sep, text = value.partition(":") if isinstance(value, str) else ("", "", "")
        name = name.strip()
        if not sep or not name or not name.isascii() or any(c in name for c in " \t\r\n") or "\n" in text:
            raise invalid("each header must be 'Name: value'", [f"Subscription.channel.header[{index}]"])
        if name.lower() in ("host", "content-length", "content-type", "transfer-encoding"):
            raise invalid(f"the {name} header is set by the server", [f"Subscription.channel.header[{index}]"])
        text = text.strip()
        if len(text) > _MAX_HEADER_VALUE or not all(" " <= c <= "~" or c == "\t" for c in text):
            # What HTTP can send (RFC 9110 5.5: visible ASCII, space, tab): anything else failed every
            # notification in the connector, as the delivery engine's internal error.
            raise invalid(f"a header value is at most {_MAX_HEADER_VALUE} characters of visible ASCII, spaces and"
                          " tabs", [f"Subscription.channel.header[{index}]"])
        headers[name] = text
    return headers


def _filters(
    element: Any, topic: Topic, parser: QueryParser | None
) -> tuple[tuple[str | None, tuple[tuple[str, str], ...]], ...]:
    """Each ``backport-filter-criteria`` (``Type?param=value&…`` or ``param=value&…``), checked by the
    search parser against the parameters the topic allows."""
    filters: list[tuple[str | None, tuple[tuple[str, str], ...]]] = []
    values = [e.get("valueString") for e in (element or {}).get("extension") or ()
              if isinstance(e, dict) and e.get("url") == FILTER_CRITERIA] if isinstance(element, dict) else []
    for index, value in enumerate(values):
        where = [f"Subscription.criteria.extension('backport-filter-criteria')[{index}]"]
        if not isinstance(value, str) or not value.strip():
            raise invalid("a filter criteria is a string like Patient?organization=Organization/x", where)
        rtype, sep, query = value.strip().partition("?")
        if not sep:
            rtype, query = "", rtype
        params = tuple(parse_qsl(query, keep_blank_values=True))
        if not params:
            raise invalid("a filter criteria names at least one search parameter", where)
        types = [rtype] if rtype else [t for t in topic.filters]
        for name, _ in params:
            base = name.split(":", 1)[0]
            if not any(base in topic.filters.get(t, ()) for t in types):
                allowed = "; ".join(f"{t}: {', '.join(p)}" for t, p in topic.filters.items())
                raise invalid(f"{topic.title} cannot be filtered by {name!r} (allowed: {allowed})", where,
                              code="not-supported")
        for t in types:
            usable = [(n, v) for n, v in params if n.split(":", 1)[0] in topic.filters.get(t, ())]
            if usable and parser is not None:
                _check(parser, t, usable, where)
        filters.append((rtype or None, params))
    return tuple(filters)


def _check(parser: QueryParser, rtype: str, params: Sequence[tuple[str, str]], where: list[str]) -> None:
    try:
        parser.parse(rtype, params, strict=True)
    except SearchError as exc:
        raise invalid(f"filter criteria: {exc.diagnostics}", where) from exc
