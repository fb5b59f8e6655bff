"""``Patient/[id]/$everything`` (R4 OperationDefinition Patient-everything), as the REST route and a
Bundle's GET entry both answer it: one function, so both take the same parameters, return only
the types and rows the client may see, and fail the same way."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from gateway import jsonio
from gateway.errors import FhirError, gone, not_found
from gateway.r4 import RESOURCE_TYPES
from gateway.search import TRUSTED, SearchAccess
from gateway.store import ResourceStore, StoredResource, is_golden, linked_ids

from . import bundles
from .reads import Params, given, paging, param, since

# $everything is the patient's record; the audit trail about them is not part of it.
_EVERYTHING_TYPES = sorted(t for t in RESOURCE_TYPES if t != "AuditEvent")

#: Patients linking to one Patient (its golden record, the records linked to it) looked at for the data policy.
_MAX_LINKED = 1000

#: Patient/$everything's parameters the gateway takes, and the general parameters of every
#: interaction that change nothing in the answer (http.html#parameters: _format is negotiated
#: before, _pretty is a hint the compact JSON ignores, as a search does).
_EVERYTHING_PARAMS = frozenset({"_count", "_offset", "_since", "_type", "_format", "_pretty", "_cursor"})


def everything_bundle(
    store: ResourceStore,
    base: str,
    rid: str,
    params: Params,
    *,
    default_count: int,
    max_count: int,
    access: SearchAccess = TRUSTED,
) -> bytes:
    """The Patient ``rid`` and every resource that refers to them, one page of it, as a searchset.

    ``access`` is the client's: its scopes decide the types returned, its data policy the rows and
    how they are given (the caller checks it may read Patient first). 404 for a Patient the store or
    the policy does not have, 410 for a deleted one.
    """
    policy = access.policy
    # With a data policy, one query: the Patient only if the policy shows it (as a read does).
    patient = store.read("Patient", rid, policy=policy)
    if patient is None:
        raise not_found(f"Patient/{rid} is not known")
    if patient.deleted:
        raise gone(f"Patient/{rid} has been deleted")
    count, offset = paging(params, default_count, max_count)
    wanted, start, used = _everything_params(params)
    # Every resource in a visible Patient's compartment refers to that Patient, so the data
    # policy lets it through, except other Patients (linked records, a golden record): the policy
    # judges a Patient by itself, so those it does not show are left out. The scopes decide the types.
    allowed = access.returnable(_EVERYTHING_TYPES)
    types = [t for t in (allowed if allowed is not None else _EVERYTHING_TYPES) if wanted is None or t in wanted]
    # A golden record's compartment is its person's: every linked source record's too.
    body = jsonio.loads(patient.content)
    linked = linked_ids(body, "seealso") if is_golden(body) else []
    if linked and policy is not None and policy.applies_to("Patient"):
        linked = sorted(store.visible(policy, "Patient", linked))
    hidden: list[str] = []
    if policy is not None and policy.applies_to("Patient") and (wanted is None or "Patient" in wanted):
        others, _ = store.compartment("Patient", rid, _MAX_LINKED, 0, ["Patient"], linked)
        shown_ids = store.visible(policy, "Patient", [p.id for p in others])
        hidden = [p.id for p in others if p.id not in shown_ids]
    # The Patient leads the first page (and counts in _count and the total) when asked for.
    lead = int((wanted is None or "Patient" in wanted) and (start is None or patient.last_updated >= start))
    # A next link's _cursor names the last resource read: its page starts after it, so resources read
    # and deleted meanwhile move nothing (as a search's pages); one more is read to know if more follow.
    raw_cursor = param(params, "_cursor") or None
    after = _everything_after(raw_cursor) if raw_cursor is not None else None
    first = offset == 0 and lead == 1 and after is None
    size = max(count - 1, 0) if first else count
    related, total = store.compartment("Patient", rid, size + 1, max(offset - lead, 0), types, linked, start, hidden,
                                       after)  # fmt: skip
    more, related = len(related) > size, related[:size]
    following = _everything_cursor(related[-1]) if related else raw_cursor
    matches = given(access, ([patient] if first and count > 0 else []) + related)
    links = bundles.page_links(f"{base}/Patient/{rid}/$everything", used, count, offset, total + lead, len(matches),
                               None, cursor=raw_cursor, after=following, more=more)
    return bundles.searchset(base, matches, total=total + lead, links=links)


def _everything_cursor(res: StoredResource) -> str:
    """The ``_cursor`` of the $everything page after ``res`` (its last resource): its type and id."""
    return base64.urlsafe_b64encode(jsonio.dumps([res.type, res.id])).decode("ascii").rstrip("=")


def _everything_after(raw: str) -> tuple[str, str]:
    """A $everything ``_cursor`` as (type, id); 400 when it is not one of this server's links."""
    try:
        found = jsonio.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        found = None
    if not (isinstance(found, list) and len(found) == 2 and all(isinstance(v, str) and v for v in found)
            and found[0] in RESOURCE_TYPES and "\x00" not in found[1]):
        raise FhirError("_cursor is not a cursor of this server's paging links", status=400, code="invalid",
                        expression=["_cursor"])
    return found[0], found[1]


def _everything_params(params: Params) -> tuple[set[str] | None, datetime | None, list[tuple[str, str]]]:
    """``_type`` (the types wanted; None: all), ``_since`` and the pairs the page links repeat;
    400 for a bad value, and for ``start``/``end`` (care dates), which the gateway does not judge."""
    wanted: set[str] | None = None
    start: datetime | None = None
    used: list[tuple[str, str]] = []
    for key, value in params:
        if key in ("start", "end"):
            raise FhirError(f"$everything's {key} (care dates) is not supported; use _since or a search",
                            status=400, code="not-supported", expression=[key])
        if key not in _EVERYTHING_PARAMS:
            raise FhirError(f"unknown $everything parameter {key[:40]!r}", status=400, code="not-supported",
                            expression=[key[:40]])
        if key == "_type":
            names = [name.strip() for name in value.split(",") if name.strip()]
            unknown = [name for name in names if name not in RESOURCE_TYPES]
            if unknown or not names:
                raise FhirError(f"_type: unknown resource type {(unknown or [value])[0][:40]!r}", status=400,
                                code="invalid", expression=["_type"])
            wanted = (wanted or set(names)) & set(names)
            used.append((key, value))
        elif key == "_since":
            start = since(value)
            used.append((key, value))
    return wanted, start, used
