"""What a batch or transaction GET entry may ask besides a read, vread or search: the history of
an instance, a type or the system, ``Patient/[id]/$everything`` and ``metadata``. Each runs the
function its REST route runs (``history_bundle``, ``everything_bundle``, the CapabilityStatement),
so an entry takes the same parameters, needs the same scopes and gets the same answer or error."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

from gateway.errors import invalid
from gateway.search import SearchAccess
from gateway.store import ResourceStore

from .everything import everything_bundle
from .history import history_bundle
from .reads import check_capability_mode

HISTORY, EVERYTHING, METADATA = "_history", "$everything", "metadata"


def operation_of(segments: list[str]) -> str | None:
    """The operation a request URL's path segments name (None: none of these, e.g. a read)."""
    if segments in (["metadata"], ["_history"]):
        return segments[0]
    if len(segments) in (2, 3) and segments[-1] == "_history":
        return HISTORY
    if len(segments) == 3 and segments[0] == "Patient" and segments[2] == "$everything":
        return EVERYTHING
    return None


def permission_needed(operation: str, rtype: str, rid: str | None) -> tuple[str, str] | None:
    """The (type, SMART letter) the REST route asks of the client (None: metadata, asked of nobody)."""
    if operation == METADATA:
        return None
    if operation == HISTORY and not rtype:
        return "*", "s"  # system history enumerates every type
    return rtype, "r" if rid is not None else "s"  # $everything is a read of the Patient


def operation_body(
    store: ResourceStore,
    base: str,
    operation: str,
    rtype: str,
    rid: str | None,
    query: str,
    *,
    default_count: int,
    max_count: int,
    access: SearchAccess,
    capability: Callable[[], bytes] | None,
) -> bytes:
    """The answer of an ``operation`` entry (``rtype`` empty for the system's), as its REST route gives it."""
    params = parse_qsl(query, keep_blank_values=True)  # as Starlette reads a URL's query
    if operation == METADATA:
        if capability is None:  # a Bundle the gateway runs for itself (ingest) has no server to describe
            raise invalid("metadata is not served here", code="not-supported")
        check_capability_mode(params)
        return capability()
    if operation == EVERYTHING:
        assert rid is not None
        return everything_bundle(store, base, rid, params, default_count=default_count, max_count=max_count,
                                 access=access)  # fmt: skip
    return history_bundle(store, base, rtype or None, rid, params, default_count=default_count, max_count=max_count,
                          access=access)  # fmt: skip
