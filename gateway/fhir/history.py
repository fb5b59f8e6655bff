"""History of an instance, a type or the whole system (http.html#history), as the REST route and a
Bundle's GET entry both answer it: one function, so both take the same parameters, give the
client the same rows, and fail the same way."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

from gateway import jsonio
from gateway.errors import FhirError, not_found
from gateway.search import TRUSTED, DateFormatError, SearchAccess, SearchError, date_range, non_negative_int
from gateway.store import ResourceStore, StoredResource

from . import bundles
from .reads import Params, given, instant, paging, param, read_subset, since
from .subsetting import subset

#: The parameters history takes (R4), and the general ones every interaction does (http.html#parameters).
_HISTORY_PARAMS = frozenset({"_count", "_offset", "_since", "_at", "_list", "_snapshot", "_summary", "_elements",
                             "_format", "_pretty"})


def history_bundle(
    store: ResourceStore,
    base: str,
    rtype: str | None,
    rid: str | None,
    params: Params,
    *,
    default_count: int,
    max_count: int,
    access: SearchAccess = TRUSTED,
    strict: bool = False,
) -> bytes:
    """The ``history`` Bundle of ``rtype/rid``, of ``rtype`` (no ``rid``) or of the system (neither).

    ``access`` is the client's: its data policy decides the rows and how they are given (the caller
    checks its scopes first). ``strict`` (``Prefer: handling=strict``): a parameter history does not
    take is refused rather than ignored. 404 for an instance the store or the policy does not have.
    """
    policy = access.policy
    if rid is not None and rtype is not None and policy is not None and policy.applies_to(rtype):
        if rid not in store.visible(policy, rtype, [rid]):
            raise not_found(f"{rtype}/{rid} is not known")
    count, offset = paging(params, default_count, max_count)
    if param(params, "_list") is not None:  # R4's other history parameter: refused, not ignored
        raise FhirError("history's _list is not supported", status=400, code="not-supported", expression=["_list"])
    summary, elements = _history_subset(params, strict)
    raw_since = param(params, "_since")
    start = since(raw_since) if raw_since else None
    # An empty value is no value, as for _since; several are the versions current in any of them.
    raw_at = [value for key, value in params if key == "_at" and value]
    at = _at(raw_at)
    # Paging newest first: versions written after the first page would push every later page one
    # place down (an entry on two pages). The links carry the first page's newest instant, in ms.
    snapshot = _history_snapshot(param(params, "_snapshot"))
    until = None if snapshot is None else datetime.fromtimestamp(snapshot / 1000, UTC)
    versions, total = store.history(rtype, rid, since=start, count=count, offset=offset, policy=policy, until=until,
                                    at=at)
    if snapshot is None and offset == 0 and versions:
        snapshot = round(versions[0].last_updated.timestamp() * 1000)
    versions = [] if summary == "count" else given(access, versions)
    if summary is not None or elements is not None:
        versions = [_subsetted(v, summary, elements) for v in versions]
    if rid is not None and total == 0:
        # No version since ``_since`` or at ``_at`` is an empty history of a resource that exists, not a 404.
        assert rtype is not None
        if (start is None and not at) or store.read(rtype, rid) is None:
            raise not_found(f"{rtype}/{rid} is not known")
    url = f"{base}/{rtype}/{rid}/_history" if rid else f"{base}/{rtype}/_history" if rtype else f"{base}/_history"
    used = [(key, value) for key in ("_since", "_summary", "_elements") if (value := param(params, key))]
    used += [("_at", value) for value in raw_at]
    links = bundles.page_links(url, used, count, offset, total, len(versions), snapshot, paged=summary != "count")
    return bundles.history(base, versions, total=total, links=links)


#: ``_at`` values one history takes: each is one more test of every version, with its next one's lookup.
MAX_AT_VALUES = 10
_COMPARATOR = re.compile(r"(eq|ne|gt|lt|ge|le|sa|eb|ap)\d", re.ASCII)


def _at(values: list[str]) -> list[tuple[datetime, datetime]]:
    """History's ``_at`` values (repeats: any of them) as ``[lo, hi)`` periods; 400 naming ``_at``
    for a value that is no FHIR date, dateTime or instant, a comparator, or too many values."""
    if len(values) > MAX_AT_VALUES:
        raise FhirError(f"_at takes at most {MAX_AT_VALUES} values", status=400, code="too-costly",
                        expression=["_at"])
    periods: list[tuple[datetime, datetime]] = []
    for value in values:
        if _COMPARATOR.match(value):
            # R4's _at is a date(Time) with no prefix; _since gives the lower bound "ge" would.
            raise FhirError(f"_at takes no comparator ({value[:2]}): a date, dateTime or instant, the versions"
                            " current during it", status=400, code="invalid", expression=["_at"])
        try:
            lo, hi = date_range(value)
        except DateFormatError as exc:
            raise FhirError(f"_at: {exc}", status=400, code="invalid", expression=["_at"]) from exc
        periods.append((instant(lo), instant(hi)))
    return periods


def _subsetted(version: StoredResource, summary: str | None, elements: list[str] | None) -> StoredResource:
    if version.deleted or not version.content:
        return version
    return replace(version, content=jsonio.dumps(subset(jsonio.loads(version.content), summary, elements)))


def _history_subset(params: Params, strict: bool) -> tuple[str | None, list[str] | None]:
    """History's ``_summary`` (``count`` too) and ``_elements``; under ``Prefer: handling=strict``
    a parameter history does not take is refused (lenient: ignored, as a search ignores one)."""
    if strict:
        unknown = sorted({key for key, _ in params if key not in _HISTORY_PARAMS})
        if unknown:
            raise FhirError(f"history does not take {', '.join(unknown)}", status=400, code="not-supported",
                            expression=unknown)
    if param(params, "_summary") == "count":
        return "count", None
    try:
        return read_subset(params)
    except FhirError as exc:
        raise FhirError("_summary on a history must be true, text, data, count or false", status=400,
                        code="invalid", expression=["_summary"]) from exc


def _history_snapshot(raw: str | None) -> int | None:
    """A history link's ``_snapshot`` (the newest instant its pages show, epoch ms), or None."""
    if raw is None:
        return None
    try:
        return non_negative_int(raw, "_snapshot")
    except SearchError as exc:
        raise FhirError("_snapshot must be a non-negative integer", status=400, code="invalid",
                        expression=["_snapshot"]) from exc
