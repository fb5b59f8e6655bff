"""``batch`` and ``transaction`` Bundles (http.html#transaction).

A transaction is processed inside one store transaction, in FHIR's order (DELETE,
POST, PUT/PATCH, then GET), after ``urn:uuid:``/``fullUrl`` and conditional
references have been resolved and rewritten; any failing entry rolls everything back
and the error names the entry. A batch runs each entry on its own and reports each
entry's own status.

This is also how mapped community-care records are stored: the mapping engine emits a
transaction Bundle and ingest runs it through ``process_bundle``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from gateway import jsonio
from gateway.errors import CLIENT_ERRORS, FhirError, GatewayError, invalid, not_found
from gateway.fhir import bundles, interactions
from gateway.fhir.entry_operations import operation_body, operation_of, permission_needed
from gateway.fhir.fhirpath_patch import is_fhirpath_patch
from gateway.fhir.full_urls import replace_full_urls
from gateway.fhir.merge import merged_elements
from gateway.fhir.outcome import issue, outcome_of
from gateway.fhir.parse import json_depth
from gateway.fhir.provenance import activity_of, record_writes
from gateway.fhir.reference_targets import check_reference_targets
from gateway.fhir.subsetting import subset
from gateway.fhir.validate import validate_resource
from gateway.ids import uuid4_text
from gateway.r4 import RESOURCE_TYPES
from gateway.search import (
    MAX_INT_DIGITS,
    TRUSTED,
    Permission,
    QueryParser,
    RowFilter,
    SearchAccess,
    SearchError,
    encode_cursor,
    format_instant,
)
from gateway.store import PreparedWrite, ResourceStore, StoredResource, StoreReads, StoreTransaction

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_LETTER = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}
_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}


@dataclass(slots=True)
class _Entry:
    index: int
    method: str
    rtype: str
    rid: str | None
    version: int | None
    query: str
    resource: dict[str, Any] | None
    full_url: str | None
    if_none_exist: str | None
    if_match: int | None
    response: dict[str, Any] = field(default_factory=dict)
    # A GET's request.ifNoneMatch / ifModifiedSince (bundle.html: a current copy answers 304).
    if_none_match: str | None = None
    if_modified_since: str | None = None
    prepared: PreparedWrite | None = None  # ResourceStore.prepare() of a PUT's resource, done before the transaction
    # A GET's _history, $everything or metadata (``entry_operations``); rtype is "" for the system's.
    operation: str | None = None
    #: A PUT that keeps the stored version's elements its resource leaves out (``gateway.fhir.merge``).
    merge: bool = False

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


def process_bundle(
    store: ResourceStore,
    parser: QueryParser,
    bundle: Any,
    base: str,
    *,
    can: Permission = TRUSTED.can,
    policy: RowFilter | None = None,
    return_resources: bool = True,
    skip_unchanged: bool = False,
    author: str | None = None,
    deidentified: bool = False,
    patch_limits: interactions.PatchLimits = interactions.DEFAULT_PATCH_LIMITS,
    capability: Callable[[], bytes] | None = None,
) -> dict[str, Any]:
    """Run a batch or transaction Bundle and return its response Bundle.

    ``author`` (an API client's name) gets a Provenance for the writes of each store transaction.
    ``deidentified``: the client reads de-identified resources (no searches by what that strips).
    ``patch_limits``: what PATCH entries may grow a resource to (the request body's limits).
    ``capability``: the server's CapabilityStatement, for ``GET metadata`` entries (None: refused).
    """
    kind = _bundle_type(bundle)
    if kind == "transaction":
        return run_prepared(
            prepare_transaction(
                store, parser, bundle, base, can=can, policy=policy, return_resources=return_resources,
                skip_unchanged=skip_unchanged, author=author, deidentified=deidentified, patch_limits=patch_limits,
                capability=capability,
            )
        )  # fmt: skip
    processor = _Processor(store, parser, base, can, policy, return_resources, skip_unchanged, author, deidentified,
                           patch_limits, capability)  # fmt: skip
    # Batch entries may not depend on each other (http.html#brules), so each runs alone.
    return _response(kind, [processor.run_batch_entry(i, raw) for i, raw in enumerate(_entries(bundle))])


@dataclass(slots=True)
class PreparedTransaction:
    """A transaction Bundle parsed and validated, with its writes prepared (``store.prepare``)
    as far as that needs no database: ``run_prepared`` then does only the database part.

    Preparing is the CPU-heavy half; ingest prepares the next batch while one commits.
    """

    processor: _Processor
    entries: list[_Entry]


def prepare_transaction(
    store: ResourceStore,
    parser: QueryParser,
    bundle: Any,
    base: str,
    *,
    can: Permission = TRUSTED.can,
    policy: RowFilter | None = None,
    return_resources: bool = True,
    skip_unchanged: bool = False,
    author: str | None = None,
    deidentified: bool = False,
    patch_limits: interactions.PatchLimits = interactions.DEFAULT_PATCH_LIMITS,
    capability: Callable[[], bytes] | None = None,
    merge: Collection[tuple[str, str]] = (),
) -> PreparedTransaction:
    """Parse and validate a transaction Bundle (a 4xx ``FhirError`` naming the entry if not);
    the PUTs of ``merge``'s (type, id) keep the stored elements their resources leave out."""
    if _bundle_type(bundle) != "transaction":
        raise invalid("a transaction Bundle is needed here", ["Bundle.type"], code="value")
    processor = _Processor(store, parser, base, can, policy, return_resources, skip_unchanged, author, deidentified,
                           patch_limits, capability)  # fmt: skip
    entries = [processor.parse_entry(i, raw) for i, raw in enumerate(_entries(bundle))]
    if merge:
        for e in entries:
            e.merge = e.method == "PUT" and (e.rtype, e.rid) in merge
    _check_full_url_targets(entries)
    processor.prepare_writes(entries)
    return PreparedTransaction(processor, entries)


def _check_full_url_targets(entries: list[_Entry]) -> None:
    """Judge references to other entries (``urn:uuid:…``) by the type of the entry they name."""
    full_urls = {e.full_url: e.rtype for e in entries if e.full_url and e.method in ("POST", "PUT")}
    if not full_urls:
        return
    for e in entries:
        if e.resource is not None and e.method in ("POST", "PUT"):
            check_reference_targets(e.resource, where=f"{e.where}.resource.", full_urls=full_urls)


def combine_prepared(parts: list[PreparedTransaction]) -> PreparedTransaction:
    """One transaction doing the work of several; a resource several parts write is written
    once, as its first part has it (callers combine only parts that agree on it)."""
    seen: set[tuple[str, str, str | None]] = set()
    entries: list[_Entry] = []
    for part in parts:
        for e in part.entries:
            key = (e.method, e.rtype, e.rid) if e.method == "PUT" and e.rid is not None else None
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            entries.append(e)  # error paths name the entry in its part; see IngestService
    return PreparedTransaction(parts[0].processor, entries)


def run_prepared(
    prepared: PreparedTransaction,
    *,
    then: Callable[[StoreTransaction], None] | None = None,
    unchanged: set[str] | None = None,
) -> dict[str, Any]:
    """Run a prepared transaction in one store transaction; return its response Bundle.

    ``then`` runs inside the same store transaction after the entries (ingest records there
    what each record produced, and retracts what it no longer does). ``unchanged``, when
    given, receives the ``Type/id`` of each update ``skip_unchanged`` found already current
    (no version written): the store says so inside the transaction, which a timestamp cannot,
    since another process may have written that very content while this one waited to write.
    """
    # Each run starts afresh: running changes a POST's or conditional PUT's entry (its id,
    # MATCHED); a PUT by id only gets its response, which is reset.
    entries = [e if e.method == "PUT" and e.rid is not None else replace(e) for e in prepared.entries]
    for e in entries:
        e.response = {}
    prepared.processor.run_transaction(entries, then)
    if unchanged is not None:
        unchanged.update(prepared.processor.unchanged)
    return _response("transaction", [e.response for e in entries])


def _bundle_type(bundle: Any) -> str:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise invalid("POST to the base URL takes a Bundle", ["Bundle"])
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise invalid(f"Bundle.type must be batch or transaction, not {kind!r}", ["Bundle.type"], code="value")
    return str(kind)


def _entries(bundle: dict[str, Any]) -> list[Any]:
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise invalid("Bundle.entry must be an array", ["Bundle.entry"], code="structure")
    _check_unique_full_urls(raw_entries)
    return raw_entries


def _check_unique_full_urls(entries: list[Any]) -> None:
    """bdl-7: entries with one ``fullUrl`` must differ in ``meta.versionId`` (else a reference to it
    would name either: the gateway would link whichever came last)."""
    seen: dict[tuple[str, Any], int] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("fullUrl"), str):
            continue
        resource = entry.get("resource")
        meta = resource.get("meta") if isinstance(resource, dict) else None
        key = (entry["fullUrl"], meta.get("versionId") if isinstance(meta, dict) else None)
        first = seen.setdefault(key, index)
        if first != index:
            raise invalid(
                f"Bundle.entry[{index}].fullUrl is also Bundle.entry[{first}]'s: a fullUrl must be unique (bdl-7)",
                [f"Bundle.entry[{index}].fullUrl"],
            )


def _response(kind: str, responses: list[dict[str, Any]]) -> dict[str, Any]:
    response: dict[str, Any] = {"resourceType": "Bundle", "id": uuid4_text(), "type": f"{kind}-response"}
    if responses:  # FHIR JSON never has empty arrays
        response["entry"] = responses
    return response


class _Processor:
    def __init__(
        self,
        store: ResourceStore,
        parser: QueryParser,
        base: str,
        can: Permission,
        policy: RowFilter | None,
        return_resources: bool,
        skip_unchanged: bool,
        author: str | None = None,
        deidentified: bool = False,
        patch_limits: interactions.PatchLimits = interactions.DEFAULT_PATCH_LIMITS,
        capability: Callable[[], bytes] | None = None,
    ) -> None:
        self.store = store
        self.capability = capability
        self.patch_limits = patch_limits
        self.author = author
        self.written: list[tuple[StoredResource, str]] = []  # (version, activity) of the running transaction
        self.unchanged: set[str] = set()  # Type/id of updates skip_unchanged left alone, in the running one
        self.parser = parser
        self.base = base
        self.can = can
        # Every search an entry runs (ifNoneExist, conditional update/delete/references, GET) is checked
        # here, and every row it reads or writes against the client's data policy.
        trusted = can is TRUSTED.can and policy is None and not deidentified
        self.access = TRUSTED if trusted else SearchAccess(can, policy, deidentified=deidentified)
        self.return_resources = return_resources
        self.skip_unchanged = skip_unchanged
        # What the GET entries may still return, all together (``SearchLimits.max_bundle_resources``).
        self.read_budget = parser.limits.max_bundle_resources

    # -- parsing -----------------------------------------------------------------------------
    def parse_entry(self, index: int, raw: Any) -> _Entry:
        where = f"Bundle.entry[{index}]"
        if not isinstance(raw, dict):
            raise invalid("a Bundle entry must be an object", [where], code="structure")
        request = raw.get("request")
        if not isinstance(request, dict):
            raise invalid("the entry has no request", [f"{where}.request"], code="required")
        method = request.get("method")
        url = request.get("url")
        if not isinstance(method, str) or method not in _ORDER:  # a JSON object or array is unhashable
            raise invalid(f"unsupported request.method {method!r}", [f"{where}.request.method"], code="value")
        if not isinstance(url, str) or not url:
            raise invalid("request.url is required", [f"{where}.request.url"], code="required")
        rtype, rid, version, query, operation = self._split_url(url, f"{where}.request.url")
        if operation is not None:
            return self._operation_entry(index, method, rtype, rid, query, operation)
        resource = raw.get("resource")
        if method in ("POST", "PUT"):
            if not isinstance(resource, dict):
                raise invalid(f"a {method} entry needs a resource", [f"{where}.resource"], code="required")
            validate_resource(resource, expected_type=rtype, where=f"{where}.resource.")
        elif method == "PATCH":
            resource = _patch_body(resource, where, self.patch_limits.max_depth)
        else:
            resource = None
        if method == "POST" and rid is not None:
            raise invalid("POST goes to a type URL, without an id", [f"{where}.request.url"])
        if version is not None and method not in ("GET", "HEAD"):
            # As over REST (405): a version is read, never written; If-Match makes a write depend on one.
            raise invalid(f"{method} does not take a version URL; send {rtype}/{rid} with ifMatch W/\"{version}\"",
                          [f"{where}.request.url"], code="not-supported")
        if method == "DELETE" and rid is None and not query:
            raise invalid("DELETE needs an id or search parameters", [f"{where}.request.url"])
        if method == "PUT" and rid is None and not query:
            raise invalid("PUT needs an id or search parameters", [f"{where}.request.url"])
        letter = _LETTER.get(method) or ("r" if rid else "s")
        if not self.can(rtype, letter):
            raise FhirError(f"the client's scopes do not allow this on {rtype}", status=403, code="forbidden",
                            expression=[where])
        full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
        if_match = _etag_version(request.get("ifMatch"), f"{where}.request.ifMatch")
        if_none_exist = request.get("ifNoneExist") if isinstance(request.get("ifNoneExist"), str) else None
        entry = _Entry(index, method, rtype, rid, version, query, resource, full_url, if_none_exist, if_match)
        if method in ("GET", "HEAD"):
            for key in ("ifNoneMatch", "ifModifiedSince"):
                if request.get(key) is not None and not isinstance(request.get(key), str):
                    raise invalid(f"request.{key} must be a string", [f"{where}.request.{key}"], code="structure")
            entry.if_none_match, entry.if_modified_since = request.get("ifNoneMatch"), request.get("ifModifiedSince")
        return entry

    def _operation_entry(self, index: int, method: str, rtype: str, rid: str | None, query: str,
                         operation: str) -> _Entry:
        """A GET entry for history, $everything or metadata, with the scope check its REST route makes."""
        where = f"Bundle.entry[{index}]"
        if method not in ("GET", "HEAD"):  # as over REST (405): these are only read
            raise invalid(f"{method} does not apply to {operation}; it is read with GET", [f"{where}.request.method"],
                          code="not-supported")
        needed = permission_needed(operation, rtype, rid)
        if needed is not None and not self.can(*needed):
            scope = f"system/{needed[0]}.{needed[1]}"
            raise FhirError(f"the client's scopes do not allow this on {needed[0]} (needs {scope})", status=403,
                            code="forbidden", expression=[where])
        entry = _Entry(index, method, rtype, rid, None, query, None, None, None, None)
        entry.operation = operation
        return entry

    def _split_url(self, url: str, where: str) -> tuple[str, str | None, int | None, str, str | None]:
        if url.startswith(self.base + "/"):
            url = url[len(self.base) + 1 :]
        elif "://" in url:
            raise invalid("request.url must be relative to this server", [where])
        if "?" in url or "#" in url or "//" in url:
            try:
                parts = urlsplit(url)
            except ValueError as exc:  # "//[..." reads as an unclosed IPv6 host
                raise invalid(f"request.url is not a URL: {exc}", [where]) from exc
            path, query = parts.path, parts.query
        else:  # the common Type/id form: no URL parsing needed
            path, query = url, ""
        segments = [s for s in path.split("/") if s]
        operation = operation_of(segments)
        if operation is not None and len(segments) == 1:
            return "", None, None, query, operation  # the system's history, metadata
        if not segments or segments[0] not in RESOURCE_TYPES:
            raise invalid(f"request.url does not name a resource type: {url[:80]!r}", [where], code="not-supported")
        rtype = segments[0]
        if operation is not None and len(segments) == 2:
            return rtype, None, None, query, operation  # the type's history
        if len(segments) == 2 and segments[1].startswith("$"):  # a type-level operation, not an id
            raise invalid(f"unsupported request.url {url[:80]!r}", [where], code="not-supported")
        rid = interactions.check_id(segments[1], where) if len(segments) > 1 else None
        version = None
        if len(segments) == 4 and segments[2] == "_history" and _is_version(segments[3]):
            version = int(segments[3])
        elif len(segments) > 2 and operation is None:
            raise invalid(f"unsupported request.url {url[:80]!r}", [where], code="not-supported")
        return rtype, rid, version, query, operation

    def prepare_writes(self, entries: list[_Entry]) -> None:
        """Prepare what a PUT by id will write, when nothing in the transaction can change it."""
        if any(e.full_url for e in entries):
            return  # a reference to a fullUrl gets rewritten inside the transaction
        for e in entries:
            if e.method == "PUT" and e.rid is not None and not e.query and e.resource is not None and not e.merge:
                if not _has_special_reference(e.resource):
                    e.prepared = self.store.prepare({**e.resource, "id": e.resource.get("id", e.rid)})

    # -- transaction -------------------------------------------------------------------------
    def run_transaction(
        self, entries: list[_Entry], then: Callable[[StoreTransaction], None] | None = None
    ) -> None:
        seen: set[tuple[str, str]] = set()
        for e in entries:
            if e.rid is not None and e.method in ("PUT", "DELETE", "PATCH"):
                if (e.rtype, e.rid) in seen:
                    raise invalid(f"{e.rtype}/{e.rid} appears twice in the transaction", [e.where], code="duplicate")
                seen.add((e.rtype, e.rid))
        self.written = []
        self.unchanged = set()
        if then is None and entries and all(e.method in ("GET", "HEAD") for e in entries):
            # Reads only: one read-only transaction sees a single state of the store, as the write
            # transaction would, without its lock (30 slow searches held every writer for seconds).
            try:
                with self.store.snapshot() as reads:
                    for e in entries:
                        e.response = self._read_entry(reads, e)
            except SearchError as exc:
                raise FhirError(str(exc), status=400, code=exc.code) from exc
            return
        with self.store.transaction() as tx:
            try:
                # DELETEs first (http.html#trules): the conditions of the POSTs and PUTs (ifNoneExist,
                # conditional updates and references), judged while ids are assigned, see them done.
                deletes = [e for e in entries if e.method == "DELETE"]
                for e in deletes:
                    e.response = self._execute(tx, e)
                aliases = self._assign_ids(tx, entries)
                tx.prefetch([(e.rtype, e.rid) for e in entries if e.rid is not None and e.method != "MATCHED"])
                for e in entries:
                    if e.resource is None or e.method == "PATCH":
                        continue
                    if aliases or (e.prepared is None and _has_special_reference(e.resource)):
                        self._rewrite(tx, e, aliases)
                for e in sorted(entries, key=_processing_order):
                    if e.method != "DELETE":
                        e.response = self._execute(tx, e)
                if then is not None:
                    then(tx)
                if self.author is not None and self.written:
                    record_writes(tx, self.written, self.author)
            except SearchError as exc:
                raise FhirError(str(exc), status=400, code=exc.code) from exc

    def _assign_ids(self, tx: StoreTransaction, entries: list[_Entry]) -> dict[str, str]:
        aliases: dict[str, str] = {}
        posted: dict[str, str] = {}  # condition key -> id, of the conditional creates before this entry
        for e in entries:
            if e.method == "POST":
                assert e.resource is not None
                earlier = posted.get(_condition_key(e.rtype, e.if_none_exist)) if e.if_none_exist else None
                if earlier is not None:
                    # The same condition as an earlier create of this transaction: that resource
                    # (the store cannot find it yet, it is not written), not a second one.
                    e.rid, e.method = earlier, "MATCHED"
                elif e.if_none_exist:
                    found = interactions.search_matches(tx, self.parser, e.rtype, e.if_none_exist,
                                                        f"{e.where}.request.ifNoneExist", access=self.access)
                    if len(found) > 1:
                        raise FhirError("ifNoneExist matches more than one resource", status=412,
                                        code="duplicate", expression=[e.where])
                    if found:
                        e.rid = found[0].id
                        e.method = "MATCHED"
                if e.rid is None:
                    e.rid = uuid4_text()
            elif e.method == "PUT" and e.rid is None:
                found = interactions.search_matches(tx, self.parser, e.rtype, e.query, f"{e.where}.request.url",
                                                    access=self.access)
                if len(found) > 1:
                    raise FhirError("the conditional update matches more than one resource", status=412,
                                    code="duplicate", expression=[e.where])
                e.rid = found[0].id if found else uuid4_text()
            if e.full_url and e.rid and e.method in ("POST", "PUT", "MATCHED"):
                aliases[e.full_url] = f"{e.rtype}/{e.rid}"
            condition = e.if_none_exist if e.method in ("POST", "MATCHED") else e.query if e.method == "PUT" else None
            if condition and e.rid:
                aliases[_condition_key(e.rtype, condition)] = f"{e.rtype}/{e.rid}"
                if e.method in ("POST", "MATCHED"):
                    posted.setdefault(_condition_key(e.rtype, condition), e.rid)
        return aliases

    def _rewrite(self, tx: StoreTransaction, e: _Entry, aliases: dict[str, str]) -> None:
        def visit(node: Any, path: str) -> None:
            if isinstance(node, dict):
                ref = node.get("reference")
                if isinstance(ref, str):
                    node["reference"] = self._resolve_reference(tx, ref, aliases, path)
                for key, value in node.items():
                    if isinstance(value, dict | list):
                        visit(value, f"{path}.{key}")
            elif isinstance(node, list):
                for n, item in enumerate(node):
                    visit(item, f"{path}[{n}]")

        visit(e.resource, f"{e.where}.resource")
        if aliases and e.resource is not None:
            replace_full_urls(e.resource, aliases)  # uri/url/oid/uuid elements and narrative links

    def _resolve_reference(self, tx: StoreTransaction, ref: str, aliases: dict[str, str], where: str) -> str:
        """``ref`` as the ``Type/id`` it stands for (``where``: the Reference element, for errors)."""
        if ref in aliases:
            return aliases[ref]
        if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
            raise invalid(f"reference {ref} does not match any fullUrl in the transaction", [where], code="not-found")
        if "?" in ref and not ref.startswith("#"):
            rtype, _, query = ref.partition("?")
            if rtype.startswith(self.base + "/"):
                rtype = rtype[len(self.base) + 1 :]
            if rtype not in RESOURCE_TYPES:
                raise invalid(f"conditional reference to an unknown type: {rtype[:40]!r}", [where])
            # A resource this transaction creates (or matches) under the very same condition is the
            # one meant: the store cannot find it yet, as the transaction has not written it.
            created = aliases.get(_condition_key(rtype, query))
            if created is not None:
                return created
            found = interactions.search_matches(tx, self.parser, rtype, query, where, access=self.access)
            if len(found) != 1:
                raise FhirError(
                    f"conditional reference {rtype}?… matches {len(found)} resources (needs exactly 1)",
                    status=412 if found else 404, code="not-found" if not found else "multiple-matches",
                    expression=[where],
                )
            return f"{rtype}/{found[0].id}"
        return ref

    def _execute(self, tx: StoreTransaction, e: _Entry) -> dict[str, Any]:
        try:
            if e.method == "MATCHED":
                current = tx.read(e.rtype, e.rid or "")
                assert current is not None
                return self._write_response(200, current)
            if e.method == "POST":
                assert e.resource is not None
                outcome = interactions.create(tx, self.parser, e.resource, rid=e.rid, access=self.access)
                return self._write_response(outcome.status, self._wrote(outcome.resource, outcome.status == 201))
            if e.method == "PUT":
                assert e.resource is not None and e.rid is not None
                resource = {**e.resource, "id": e.resource.get("id", e.rid) if e.query == "" else e.rid}
                if e.merge:
                    resource = _merged(tx, e, resource)
                outcome = interactions.update(tx, resource, e.rtype, e.rid, if_match=e.if_match,
                                              skip_unchanged=self.skip_unchanged, prepared=e.prepared,
                                              access=self.access)
                if not outcome.changed:
                    self.unchanged.add(f"{e.rtype}/{e.rid}")
                entry = self._write_response(outcome.status, self._wrote(outcome.resource, outcome.status == 201))
                # The stored version keeps identifiers and links the client did not send (DHIS2 UIDs,
                # identity links): only for a client that may read it.
                if not self.access.may_return(e.rtype):
                    entry.pop("resource", None)
                return entry
            if e.method == "PATCH":
                if e.rid is None:
                    raise invalid("PATCH needs an id", [f"{e.where}.request.url"])
                outcome = interactions.patch(tx, e.rtype, e.rid, e.resource, if_match=e.if_match,
                                             access=self.access, limits=self.patch_limits)
                # The patched resource is mostly what was stored: only for a client that may read it.
                entry = self._write_response(outcome.status, self._wrote(outcome.resource, False))
                if not self.access.may_return(e.rtype):
                    entry.pop("resource", None)
                return entry
            if e.method == "DELETE":
                if e.rid is not None:
                    deleted = interactions.delete(tx, e.rtype, e.rid, if_match=e.if_match, access=self.access)
                    tombstones = [deleted] if deleted is not None else []
                else:
                    tombstones = interactions.conditional_delete(tx, self.parser, e.rtype, e.query,
                                                                 if_match=e.if_match, access=self.access)
                for tombstone in tombstones:
                    self._wrote(tombstone, False)
                return {"response": {"status": "204 No Content"}}
            return self._read_entry(tx, e)
        except GatewayError as exc:
            if not exc.expression and not exc.extra_issues:
                exc.expression = [e.where]
            raise

    def _read_entry(self, reads: StoreReads | ResourceStore, e: _Entry) -> dict[str, Any]:
        """A GET or HEAD entry, answered from ``reads`` (a transaction, a read-only snapshot, or the store
        for a batch); an error without a location names the entry."""
        try:
            answer = self._get(reads, e)
        except GatewayError as exc:
            if not exc.expression and not exc.extra_issues:
                exc.expression = [e.where]
            raise
        if e.method == "HEAD":
            answer.pop("resource", None)  # as a HEAD request: the headers (etag, lastModified), no body
        return answer

    def _wrote(self, res: StoredResource, created: bool) -> StoredResource:
        """Note a version this transaction wrote, for its Provenance (clients' writes only)."""
        if self.author is not None:
            self.written.append((res, activity_of(res, created)))
        return res

    def _spend(self, cost: int) -> None:
        """Count what a GET entry returns against the Bundle's budget (400 too-costly past it)."""
        if cost > self.read_budget:
            self.read_budget = 0
            limit = self.parser.limits.max_bundle_resources
            raise FhirError(
                f"the GET entries of this Bundle would return more than {limit} resources together (each entry"
                " counts at least one); send the rest in another request, or page with _count",
                status=400, code="too-costly",
            )  # fmt: skip
        self.read_budget -= cost

    def _get(self, tx: StoreReads | ResourceStore, e: _Entry) -> dict[str, Any]:
        self._spend(0 if self.read_budget > 0 else 1)  # spent: refused before anything runs
        if e.operation is not None:
            # Read from the store, not ``tx``: history and compartments are ResourceStore reads (as a vread).
            body = jsonio.loads(operation_body(self.store, self.base, e.operation, e.rtype, e.rid, e.query,
                                               default_count=self.parser.default_count,
                                               max_count=self.parser.max_count, access=self.access,
                                               capability=self.capability))
            self._spend(max(1, len(body.get("entry", ()))))
            return {"resource": body, "response": {"status": "200 OK"}}
        if e.rid is not None:
            self._spend(1)
            current = self.store.vread(e.rtype, e.rid, e.version) if e.version else tx.read(e.rtype, e.rid)
            policy = self.access.policy
            hidden = policy is not None and policy.applies_to(e.rtype) and not tx.visible(policy, e.rtype, [e.rid])
            if current is not None and e.version and not hidden:
                # An older version may be about a Patient the policy hides (as a REST vread judges it).
                hidden = not self.store.visible_versions(policy, [current])
            if current is None or hidden:
                raise not_found(f"{e.rtype}/{e.rid} is not known")
            if current.deleted:
                return {"response": {"status": "410 Gone"}}
            if interactions.not_modified(current, e.if_none_match, e.if_modified_since):
                entry = self._write_response(304, current)
                entry.pop("resource", None)  # the client's copy is current (conditional read)
                return entry
            entry = self._write_response(200, current, force_resource=True)
            summary, elements = _read_subset(e.query, e.where)
            if summary is not None or elements is not None:  # as a REST read takes them
                entry["resource"] = subset(entry["resource"], summary, elements)
            return entry
        query = self.parser.parse(e.rtype, parse_qsl(e.query, keep_blank_values=True), access=self.access)
        result = tx.search(query)
        self._spend(max(1, len(result.resources) + len(result.included)))
        # As the REST search answers: included resources, _summary/_elements, warnings and links.
        transform = None
        if query.summary is not None or query.elements is not None:
            transform = {(r.type, r.id): jsonio.dumps(subset(jsonio.loads(r.content), query.summary, query.elements))
                         for r in [*result.resources, *result.included]}
        outcome = None
        if query.warnings:
            outcome = outcome_of([issue("not-supported", w, severity="warning") for w in query.warnings])
        links = bundles.page_links(f"{self.base}/{e.rtype}", query.used, query.count, query.offset, result.total,
                                   len(result.resources), result.snapshot, paged=query.summary != "count",
                                   cursor=query.cursor, more=result.more,
                                   after=None if result.after is None else encode_cursor(*result.after))
        searchset = jsonio.loads(bundles.searchset(self.base, result.resources, total=result.total, links=links,
                                                   included=result.included, outcome=outcome, transform=transform))
        return {"resource": searchset, "response": {"status": "200 OK"}}

    def _write_response(self, status: int, res: StoredResource, force_resource: bool = False) -> dict[str, Any]:
        entry: dict[str, Any] = {"fullUrl": f"{self.base}/{res.type}/{res.id}"}
        if self.return_resources or force_resource:
            entry["resource"] = jsonio.loads(res.content)
        entry["response"] = {
            "status": _STATUS_TEXT.get(status, str(status)),
            "location": f"{res.type}/{res.id}/_history/{res.version}",
            "etag": res.etag,
            "lastModified": format_instant(res.last_updated.timestamp()),
        }
        return entry

    # -- batch -------------------------------------------------------------------------------
    def run_batch_entry(self, index: int, raw: Any) -> dict[str, Any]:
        try:
            entry = self.parse_entry(index, raw)
            if entry.method in ("GET", "HEAD"):
                # Entries of a batch are independent: a read needs no write transaction, whose lock
                # would stall every write of the gateway while the entry's search runs.
                entry.response = self._read_entry(self.store, entry)
            else:
                self.run_transaction([entry])
            return entry.response
        except SearchError as exc:  # first: it is a client error too, but keeps its own rendering
            return {"response": {"status": "400", "outcome": outcome_of(
                [{"severity": "error", "code": exc.code, "diagnostics": str(exc)}])}}
        except CLIENT_ERRORS as exc:
            return {"response": {"status": str(exc.status), "outcome": outcome_of(exc.issues())}}


# A reference the transaction must resolve: urn:uuid:/urn:oid: or a conditional one (Type?…),
# found in the resource's JSON without walking it (most resources have neither).
_SPECIAL_REFERENCE = re.compile(rb'"reference":"(?:urn:|(?:[^"\\]|\\.)*\?)')


def _condition_key(rtype: str, query: str) -> str:
    """The alias key of a conditional create's or update's search (its parameters in one order);
    no fullUrl can equal it, as it starts with a space."""
    return f" {rtype}?{urlencode(sorted(parse_qsl(query, keep_blank_values=True)))}"


def _read_subset(query: str, where: str) -> tuple[str | None, list[str] | None]:
    """A read entry's ``_summary`` (true, text, data; false: the whole resource) and ``_elements``."""
    params = dict(parse_qsl(query))  # an empty value is not there (search.html)
    summary = params.get("_summary") or None
    if summary is not None and summary not in ("true", "text", "data", "false"):
        raise invalid("_summary on a read must be true, text, data or false", [f"{where}.request.url"])
    raw = params.get("_elements")
    elements = [item.strip() for item in raw.split(",") if item.strip()] if raw else None
    return (None if summary == "false" else summary), elements


def _merged(tx: StoreTransaction, e: _Entry, resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` with the elements of ``e``'s stored version it leaves out, validated again: the
    stored elements can meet the new ones in an invariant (a period's end and a new start)."""
    current = tx.read(e.rtype, e.rid or "")
    if current is None or current.deleted:
        return resource
    merged = merged_elements(jsonio.loads(current.content), resource)
    validate_resource(merged, expected_type=e.rtype, where=f"{e.where}.resource.")
    return merged


def _has_special_reference(resource: dict[str, Any]) -> bool:
    data = jsonio.dumps(resource)
    if b'"reference":"urn:' not in data and b"?" not in data:
        return False  # the common case, without running the pattern
    return _SPECIAL_REFERENCE.search(data) is not None


def _processing_order(e: _Entry) -> tuple[int, int]:
    # A POST whose ifNoneExist matched is "MATCHED" by now; it keeps its place among the POSTs.
    return _ORDER["POST" if e.method == "MATCHED" else e.method], e.index


def _patch_body(resource: Any, where: str, max_depth: int) -> Any:
    # FHIR carries a JSON Patch in a Binary resource inside Bundles (http.html#patch), a FHIRPath
    # Patch as the Parameters resource itself (its depth is the Bundle's, already checked).
    if is_fhirpath_patch(resource):
        return resource
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary":
        data = resource.get("data")
        if not isinstance(data, str):
            raise invalid("the PATCH Binary has no data", [f"{where}.resource.data"], code="required")
        try:
            operations = jsonio.loads(base64.b64decode(data, validate=True))
        except (binascii.Error, orjson.JSONDecodeError) as exc:
            raise invalid("the PATCH Binary does not hold a JSON Patch", [f"{where}.resource.data"]) from exc
        # As deep as a PATCH request's body may be (its values would nest past Python's stack when copied).
        if json_depth(operations, max_depth) > max_depth:
            raise FhirError(f"the JSON Patch nests deeper than {max_depth} levels", status=400, code="too-costly",
                            expression=[f"{where}.resource.data"])
        return operations
    raise invalid("a PATCH entry needs a Binary resource holding a JSON Patch, or a Parameters resource"
                  " (a FHIRPath Patch)", [f"{where}.resource"])


def _is_version(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= MAX_INT_DIGITS


def _etag_version(value: Any, where: str) -> int | None:
    if value is None:
        return None
    return parse_etag(str(value), where)


def parse_etag(value: str, where: str = "If-Match") -> int:
    """``W/"3"`` (or a bare ``3``) → 3."""
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_INT_DIGITS:
        raise invalid(f"{where} must be an ETag like W/\"3\"", [where])
    return int(text)
