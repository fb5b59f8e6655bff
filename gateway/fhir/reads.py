"""What the read-side interactions share, over REST and as a Bundle's GET entries alike: their
parameters (given as the URL's query pairs), and resources as a client's access gives them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from gateway.errors import FhirError
from gateway.search import DateFormatError, SearchAccess, SearchError, date_range, non_negative_int
from gateway.store import StoredResource

from .deidentification import content_as_policy_gives

#: A request's query parameters, in order (``[("_count", "5"), ...]``), blank values kept.
Params = Sequence[tuple[str, str]]

# What datetime can hold; a time-zone offset can move 0001-01-01 or 9999-12-31 past it.
_EARLIEST, _LATEST = datetime(1, 1, 1, tzinfo=UTC).timestamp(), datetime(9999, 12, 31, tzinfo=UTC).timestamp()


def param(params: Params, key: str) -> str | None:
    """The value of ``key`` (its last one when repeated, as Starlette's ``QueryParams.get``), or None."""
    found = None
    for name, value in params:
        if name == key:
            found = value
    return found


def paging(params: Params, default: int, maximum: int) -> tuple[int, int]:
    """``_count`` (``default`` when absent, at most ``maximum``) and ``_offset``; 400 if not numbers."""
    # An empty value is no value (search.html), as in a search.
    raw_count = param(params, "_count") or str(default)
    raw_offset = param(params, "_offset") or "0"
    try:
        return non_negative_int(raw_count, "_count", cap=maximum), non_negative_int(raw_offset, "_offset")
    except SearchError as exc:
        raise FhirError("_count and _offset must be non-negative integers", status=400, code="invalid",
                        expression=exc.expression or ["_count"]) from exc


def since(raw: str) -> datetime:
    """A ``_since`` value as the instant it starts at (400 if it is no FHIR instant or date)."""
    try:
        return instant(date_range(raw)[0])
    except DateFormatError as exc:
        raise FhirError(f"_since: {exc}", status=400, code="invalid", expression=["_since"]) from exc


def instant(epoch: float) -> datetime:
    """Epoch seconds as a datetime, held inside what datetime can hold."""
    return datetime.fromtimestamp(min(max(epoch, _EARLIEST), _LATEST), UTC)


def read_subset(params: Params) -> tuple[str | None, list[str] | None]:
    """A read's ``_summary`` (true, text, data; false: the whole resource) and ``_elements`` (400 if bad)."""
    summary = param(params, "_summary") or None  # empty: not there (search.html)
    if summary is not None and summary not in ("true", "text", "data", "false"):
        raise FhirError("_summary on a read must be true, text, data or false", status=400, code="invalid",
                        expression=["_summary"])
    raw = param(params, "_elements") or None
    elements = [e.strip() for e in raw.split(",") if e.strip()] if raw is not None else None
    return (None if summary == "false" else summary), elements


def check_capability_mode(params: Params) -> None:
    """400 unless ``mode`` asks for the CapabilityStatement the server has (``metadata``)."""
    # http.html#capabilities: mode=full|normative is this statement (servers may ignore the mode and
    # return the whole of it; "normal", accepted before, still is); terminology asks for a
    # TerminologyCapabilities, which a server without a terminology service has none of.
    mode = param(params, "mode")
    if mode == "terminology":
        raise FhirError("mode=terminology: this server has no terminology service (no TerminologyCapabilities)",
                        status=400, code="not-supported", expression=["mode"])
    if mode not in (None, "full", "normative", "normal"):
        raise FhirError(f"mode must be full, normative or terminology, not {mode!r}", status=400, code="invalid",
                        expression=["mode"])


def given(access: SearchAccess, resources: list[StoredResource]) -> list[StoredResource]:
    """The resources as the client may be given them: de-identified when its policy says so, and
    without the identity matcher's links when its policy limits rows (``content_as_policy_gives``)."""
    limits_rows, deidentified = access.policy is not None, access.deidentified
    if not deidentified and not limits_rows:
        return resources
    return [r if r.deleted or not r.content else
            replace(r, content=content_as_policy_gives(r.content, limits_rows=limits_rows, deidentified=deidentified))
            for r in resources]  # fmt: skip
