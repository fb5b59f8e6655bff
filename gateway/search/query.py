"""Parsing FHIR search parameters into a ``SearchQuery``.

The parser knows the supported parameters (``SearchRegistry``) and FHIR's value syntax
for each parameter type; the SQL for a parsed query is built in ``gateway.search.sql``.
Malformed values and unsupported modifiers raise ``SearchError`` (HTTP 400); unknown
parameters are reported back as warnings, or raise in strict handling mode.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any

from gateway import jsonio
from gateway.errors import FhirError, RequestError
from gateway.r4 import RESOURCE_TYPES
from gateway.search.access import TRUSTED, SearchAccess
from gateway.search.code_systems import implied_systems
from gateway.search.dates import DateFormatError, date_range
from gateway.search.deidentified import refuse_identifying
from gateway.search.extract import normalise
from gateway.search.keys import string_key, token_key
from gateway.search.matcher_links import refuse_link_searches
from gateway.search.paths import split_reference
from gateway.search.policy import RowFilter
from gateway.search.registry import SearchParam, SearchRegistry

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MODIFIERS = {
    "token": {"not", "missing"},
    "uri": {"missing"},
    "string": {"exact", "contains", "missing"},
    "date": {"missing"},
    "reference": {"missing"},  # plus a resource type, handled separately
    "number": {"missing"},
    "quantity": {"missing"},
}
RESULT_PARAMS = {
    "_count", "_offset", "_sort", "_total", "_summary", "_elements", "_include",
    "_revinclude", "_format", "_pretty", "_snapshot", "_cursor",
}  # fmt: skip
SUMMARY_VALUES = {"true", "false", "count", "text", "data"}
#: ``_include=Type:*``: every reference parameter of the type.
WILDCARD = "*"
_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_MAX_INCLUDED = 1000
#: matches a search counts at most for its total unless it asks ``_total=accurate``
_TOTAL_CAP = 1000


@dataclass(frozen=True, slots=True)
class SearchLimits:
    """How large one search may be; a larger one is refused (400), naming the parameter.

    Each parameter's values become an OR chain and each criterion a subquery, and the
    databases give up on SQL past a size (SQLite's expression depth and compound SELECT
    terms, PostgreSQL's bind parameters and stack depth); every ``_include`` and
    ``_revinclude`` is one more query over the whole page. These bounds keep a search
    well inside all of them and its cost proportional to what a client may ask.
    """

    max_values: int = 100  # values of one parameter (comma-separated), and _sort keys
    max_criteria: int = 30  # filtering parameters of one search (_id and _lastUpdated count)
    max_includes: int = 10  # distinct _include and _revinclude values
    max_included: int = _MAX_INCLUDED  # resources included into one page
    total_cap: int = _TOTAL_CAP  # matches counted for an estimated total (more: no total)
    #: resources the GET entries of one batch or transaction Bundle return together (each entry counts
    #: at least one): one request must not be able to ask for pages without end
    max_bundle_resources: int = 10_000
    #: ``_sort`` keys of one search (repeats collapsed): each is one more index probe per match
    max_sort_keys: int = 5


class SearchError(RequestError):
    """A search request that cannot be run as asked (HTTP 400); ``expression`` holds the parameter."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid") -> None:
        super().__init__(message, code=code, expression=[param] if param else None)


@dataclass(frozen=True, slots=True)
class TokenValue:
    """``system|code``: system None = any system, "" = no system; code None = any code."""

    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class StringValue:
    """A string search value, both as typed and normalised."""

    exact: str
    norm: str


@dataclass(frozen=True, slots=True)
class DateValue:
    """A date search value with its prefix and implied range."""

    prefix: str
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """A reference search value: type and id, or an opaque URL (canonicals, unknown bases)."""

    type: str | None
    id: str | None
    url: str | None


@dataclass(frozen=True, slots=True)
class NumberValue:
    """A number/quantity search value with its prefix and implied precision range."""

    prefix: str
    value: float
    low: float
    high: float
    system: str | None = None
    code: str | None = None


Value = TokenValue | StringValue | DateValue | ReferenceValue | NumberValue


@dataclass(slots=True)
class Criterion:
    """One search parameter occurrence: its values are ORed; criteria are ANDed."""

    code: str  # as written, for the self link, e.g. "subject:Patient.name"
    param: SearchParam
    modifier: str | None
    values: list[Value]
    missing: bool | None = None  # for :missing
    chain: tuple[str, Criterion] | None = None  # (target type, criterion on that type)
    has: tuple[str, str, Criterion] | None = None  # (source type, reference param, criterion)
    raw: str = ""


@dataclass(frozen=True, slots=True)
class SortKey:
    """One ``_sort`` key."""

    code: str
    param: SearchParam | None  # None for _id / _lastUpdated
    descending: bool


@dataclass(frozen=True, slots=True)
class Include:
    """An ``_include`` or ``_revinclude`` request: ``source:param[:target]``; ``param`` ``*`` is
    every reference parameter of ``source`` (search.html's wildcard)."""

    source: str
    param: str
    target: str | None
    # Types an untargeted include must not return (the client may read all the others): one
    # query with an exclusion instead of one query for each of a hundred allowed types.
    exclude: tuple[str, ...] = ()
    #: ``:iterate``: also applied to the resources included, round after round (``ITERATE_ROUNDS``).
    iterate: bool = False


@dataclass(slots=True)
class SearchQuery:
    """A parsed search: filters plus result parameters."""

    rtype: str
    criteria: list[Criterion] = field(default_factory=list)
    ids: list[list[str]] = field(default_factory=list)  # each _id occurrence (ORed inside)
    last_updated: list[DateValue] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    count: int = 20
    offset: int = 0
    snapshot: int | None = None
    # ``_cursor`` of a ``next`` link: the last match of the page before, as (row id, its sort keys'
    # values); the page starts after it (keyset paging), so matches read already that are deleted
    # or edited away meanwhile do not move the later ones. ``cursor`` is the link's text.
    after: tuple[int, tuple[Any, ...]] | None = None
    cursor: str | None = None
    # none | estimate | accurate. A parsed request without ``_total`` gets ``estimate``: exact up to
    # ``total_cap`` matches, absent above (a count of every match grows with the store).
    total: str = "accurate"
    total_cap: int = _TOTAL_CAP
    summary: str | None = None
    elements: list[str] | None = None
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    max_included: int = _MAX_INCLUDED  # more resources to include is a SearchError
    used: list[tuple[str, str]] = field(default_factory=list)  # applied params, for the self link
    policy: RowFilter | None = None  # the client's data policy: rows it may see
    warnings: list[str] = field(default_factory=list)


def split_values(raw: str) -> list[str]:
    """Split a comma-separated value list, honouring ``\\,`` escapes."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw) and raw[i + 1] in ",|$\\":
            current.append(raw[i + 1])
            i += 2
            continue
        if ch == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


class QueryParser:
    """Turns request parameters into a ``SearchQuery`` for one resource type."""

    def __init__(
        self, registry: SearchRegistry, default_count: int, max_count: int, limits: SearchLimits | None = None
    ) -> None:
        self.registry = registry
        self.default_count = default_count
        self.max_count = max_count
        self.limits = limits or SearchLimits()

    def parse(
        self, rtype: str, items: Iterable[tuple[str, str]], *, strict: bool = False, access: SearchAccess = TRUSTED
    ) -> SearchQuery:
        """Parse ``(name, value)`` pairs (repeats allowed) into a query ``access`` allows (403 if not)."""
        query = self._parse(rtype, items, strict)
        if access is not TRUSTED:
            self._authorise(query, access)
        return query

    def _parse(self, rtype: str, items: Iterable[tuple[str, str]], strict: bool) -> SearchQuery:
        query = SearchQuery(rtype=rtype, count=self.default_count, max_included=self.limits.max_included,
                            total="estimate", total_cap=self.limits.total_cap)
        criteria = 0
        for key, raw in items:
            if "\x00" in key or "\x00" in raw:
                # No FHIR string holds NUL, so nothing could match; PostgreSQL refuses NUL in text.
                where = key[:64].replace("\x00", "?")
                raise SearchError("search parameters may not contain NUL characters", where)
            if raw == "":
                continue  # an empty value means the parameter is not there (search.html), _count= too
            if key in RESULT_PARAMS or key.split(":", 1)[0] in ("_include", "_revinclude", "_sort"):
                self._result_param(query, key, raw, strict)
                continue
            criteria += 1
            if criteria > self.limits.max_criteria:
                raise SearchError(
                    f"too many search parameters: at most {self.limits.max_criteria} may filter one search",
                    key[:64], code="too-costly",
                )
            if key.startswith("_has:"):
                query.criteria.append(self._has(rtype, key, raw))
                query.used.append((key, raw))
                continue
            name, _, modifier = key.partition(":")
            if name in ("_id", "_lastUpdated") and modifier:
                # Known parameters with no modifier support here: refused like any unsupported modifier,
                # never ignored as "unknown" (that would return the resources the client excluded).
                raise SearchError(f"modifier :{modifier} is not supported on {name}", key, "not-supported")
            if name == "_id" and not modifier:
                ids = self._split(key, raw)
                for rid in ids:
                    if not _ID_RE.match(rid):
                        raise SearchError(f"invalid id {rid!r} in _id", "_id")
                query.ids.append(ids)
                query.used.append((key, raw))
                continue
            if name == "_lastUpdated" and not modifier:
                query.last_updated.extend(_date_value(v, "_lastUpdated") for v in self._split(key, raw))
                if len(query.last_updated) > self.limits.max_values:  # all ANDed in one chain
                    raise SearchError(
                        f"_lastUpdated has more than {self.limits.max_values} values in all", key, code="too-costly"
                    )
                query.used.append((key, raw))
                continue
            chain_name, dot, chain_rest = key.partition(".")
            if dot:
                criterion = self._chain(rtype, chain_name, chain_rest, raw, strict)
            else:
                param = self.registry.get(rtype, name)
                if param is None or param.path is None:
                    self._unknown(query, key, f"unknown search parameter {name!r} for {rtype}", strict)
                    continue
                criterion = self._criterion(rtype, param, key, modifier or None, raw)
            if criterion is None:
                self._unknown(query, key, f"unknown search parameter {key!r} for {rtype}", strict)
                continue
            query.criteria.append(criterion)
            query.used.append((key, raw))
        if query.cursor is not None:
            query.after = decode_cursor(query.cursor, query.sort)
        return query

    def _authorise(self, query: SearchQuery, access: SearchAccess) -> None:
        # Every type the query filters on is searched, so each needs "s"; included types are
        # returned, so each needs "r" or "s". An _include naming no type keeps the types allowed.
        # The client's data policy goes with the query: the store applies it to every row it reads.
        query.policy = access.policy
        access.require_search(query.rtype)
        if access.deidentified:
            refuse_identifying(query)
        if access.policy is not None:
            refuse_link_searches(query)
        for criterion in query.criteria:
            other = criterion.chain[0] if criterion.chain else criterion.has[0] if criterion.has else None
            if other is not None:
                access.require_search(other, criterion.code)
        includes: list[Include] = []
        for inc in query.includes:
            if inc.target is not None:
                access.require_return(inc.target, "_include")
                includes.append(inc)
                continue
            param = self.registry.get(inc.source, inc.param)
            allowed = access.returnable(param.targets if param is not None and param.targets else None)
            if allowed is None:
                includes.append(inc)
            elif not allowed:
                raise FhirError(
                    f"the client's scopes allow reading none of the types {inc.source}:{inc.param} refers to",
                    status=403, code="forbidden", expression=["_include"],
                )  # fmt: skip
            else:
                candidates = param.targets if param is not None and param.targets else RESOURCE_TYPES
                denied = tuple(sorted(set(candidates) - set(allowed)))
                if len(denied) < len(allowed):
                    includes.append(Include(inc.source, inc.param, None, denied, inc.iterate))
                else:
                    includes.extend(Include(inc.source, inc.param, target, (), inc.iterate) for target in allowed)
        query.includes = includes
        for inc in query.revincludes:
            access.require_return(inc.source, "_revinclude")

    def _unknown(self, query: SearchQuery, key: str, message: str, strict: bool) -> None:
        if strict:
            raise SearchError(message, key, code="not-supported")
        query.warnings.append(message + " (ignored)")

    def _criterion(
        self, rtype: str, param: SearchParam, key: str, modifier: str | None, raw: str
    ) -> Criterion:
        criterion = Criterion(code=key, param=param, modifier=modifier, values=[], raw=raw)
        if modifier == "missing":
            if raw not in ("true", "false"):
                raise SearchError(f"{key} must be true or false", key)
            criterion.missing = raw == "true"
            return criterion
        if modifier is not None and modifier not in MODIFIERS[param.type]:
            if param.type == "reference" and modifier[:1].isupper():
                if param.targets and modifier not in param.targets:
                    raise SearchError(f"{param.code} cannot refer to {modifier}", key)
            else:
                message = f"modifier :{modifier} is not supported on {param.code}"
                raise SearchError(message, key, "not-supported")
        for item in self._split(key, raw):
            value = self._value(param, key, modifier, item)
            if isinstance(value, TokenValue) and value.system and value.system in implied_systems(rtype, param):
                value = TokenValue("", value.code)  # a code's system is its binding's: stored without one
            criterion.values.append(value)
        return criterion

    def _split(self, key: str, raw: str) -> list[str]:
        """The values of one parameter, refused (400) past ``max_values``."""
        values = split_values(raw)
        if len(values) > self.limits.max_values:
            raise SearchError(
                f"{key[:64]} has {len(values)} values; at most {self.limits.max_values} are allowed",
                key[:64], code="too-costly",
            )
        return values

    def _value(self, param: SearchParam, key: str, modifier: str | None, item: str) -> Value:
        ptype = param.type
        # Compared as the index keeps them (``keys``): long values bounded, tokens by their hash.
        if ptype in ("token", "uri"):
            if ptype == "uri":
                return TokenValue(None, token_key(item))
            if "|" in item:
                system, _, code = item.partition("|")
                return TokenValue(token_key(system), token_key(code) or None)
            return TokenValue(None, token_key(item))
        if ptype == "string":
            return StringValue(item, string_key(normalise(item)))
        if ptype == "date":
            return _date_value(item, key)
        if ptype == "reference":
            target_type = modifier if modifier and modifier[:1].isupper() else None
            parsed = split_reference(item)
            if parsed is not None:
                if target_type and parsed[0] != target_type:
                    raise SearchError(f"{item!r} is not a {target_type} reference", key)
                # An absolute URL may be a reference to a resource here or a canonical URL.
                return ReferenceValue(token_key(parsed[0]), token_key(parsed[1]), item if "://" in item else None)
            if "/" in item or ":" in item:
                return ReferenceValue(None, None, item)
            if not _ID_RE.match(item):
                raise SearchError(f"invalid reference {item!r}", key)
            return ReferenceValue(target_type, item, None)
        return _number_value(item, key, ptype == "quantity")

    def _chain(self, rtype: str, head: str, rest: str, raw: str, strict: bool) -> Criterion | None:
        name, _, target = head.partition(":")
        param = self.registry.get(rtype, name)
        if param is None or param.type != "reference":
            return None
        if not target and len(param.targets) == 1:
            target = param.targets[0]
        elif not target:
            # search.html: a chain through a reference to several types names one (subject:Patient.name);
            # when only one of them has the chained parameter, that one is meant.
            inner_code = rest.split(".", 1)[0].partition(":")[0]
            having = [t for t in param.targets if self.registry.get(t, inner_code) is not None]
            if not having and not inner_code.startswith("_"):
                raise SearchError(f"unknown parameter {inner_code!r} in the chain {head}.{rest}: no type"
                                  f" {head} can refer to has it", f"{head}.{rest}")
            if len(having) != 1:
                among = f" ({inner_code} is a parameter of {', '.join(having)})" if having else ""
                raise SearchError(f"chained parameter {head} needs a type modifier ({head}:Type.…){among}", head)
            target = having[0]
        if param.targets and target not in param.targets:
            raise SearchError(f"{name} cannot refer to {target}", head)
        if "." in rest:
            raise SearchError("only one level of chaining is supported", f"{head}.{rest}", "not-supported")
        inner_name, _, inner_mod = rest.partition(":")
        if inner_name in ("_id", "_lastUpdated"):
            # Known parameters the chain cannot reach: ignoring them as unknown would match every
            # resource of the type instead of those referring to the one named.
            hint = f"; search {head}=<id> instead" if inner_name == "_id" else ""
            raise SearchError(f"chaining to {inner_name} is not supported{hint}", f"{head}.{rest}", "not-supported")
        inner = self.registry.get(target, inner_name)
        if inner is None or inner.path is None:
            if strict:
                raise SearchError(f"unknown search parameter {inner_name!r} for {target}", rest)
            return None
        inner_criterion = self._criterion(target, inner, rest, inner_mod or None, raw)
        return Criterion(
            code=f"{head}.{rest}", param=param, modifier=target, values=[],
            chain=(target, inner_criterion), raw=raw,
        )  # fmt: skip

    def _has(self, rtype: str, key: str, raw: str) -> Criterion:
        pieces = key.split(":", 3)  # the last piece is the parameter with its modifier (code:not)
        if len(pieces) == 4 and pieces[3].split(":", 1)[0] == "_has":
            raise SearchError("a _has inside a _has is not supported", key, "not-supported")
        if len(pieces) != 4 or not all(pieces[1:]) or pieces[3].count(":") > 1:
            raise SearchError("_has must look like _has:Type:reference-param:param[:modifier]", key)
        _, source, ref_name, inner_key = pieces
        if source not in RESOURCE_TYPES:
            raise SearchError(f"_has names an unknown resource type {source[:40]!r}", key)
        ref_param = self.registry.get(source, ref_name)
        if ref_param is None or ref_param.type != "reference":
            raise SearchError(f"{source} has no reference parameter {ref_name!r}", key)
        inner_name, _, inner_mod = inner_key.partition(":")
        if inner_name in ("_id", "_lastUpdated"):
            raise SearchError(f"_has with {inner_name} is not supported; search {source}?{inner_name}=… and then by"
                              f" the references it returns", key, "not-supported")
        inner = self.registry.get(source, inner_name)
        if inner is None or inner.path is None:
            raise SearchError(f"unknown search parameter {inner_name!r} for {source}", key)
        inner_criterion = self._criterion(source, inner, inner_key, inner_mod or None, raw)
        has = (source, ref_name, inner_criterion)
        return Criterion(code=key, param=ref_param, modifier=None, values=[], has=has, raw=raw)

    def _result_param(self, query: SearchQuery, key: str, raw: str, strict: bool) -> None:
        if key == "_count":
            query.count = non_negative_int(raw, key, cap=self.max_count)
        elif key == "_offset":
            query.offset = non_negative_int(raw, key)
        elif key == "_snapshot":
            query.snapshot = non_negative_int(raw, key)
        elif key == "_cursor":
            query.cursor = raw  # decoded once the sort keys it holds values of are known
        elif key == "_total":
            if raw not in ("none", "estimate", "accurate"):
                raise SearchError("_total must be none, estimate or accurate", key)
            query.total = raw
        elif key == "_summary":
            if raw not in SUMMARY_VALUES:
                raise SearchError("_summary must be true, false, count, text or data", key)
            query.summary = None if raw == "false" else raw
        elif key == "_elements":
            query.elements = [e.strip() for e in raw.split(",") if e.strip()]
        elif key == "_sort":
            keys = [k.strip() for k in raw.split(",") if k.strip()]
            if len(keys) > self.limits.max_values:
                raise SearchError(
                    f"_sort has {len(keys)} keys; at most {self.limits.max_values} are allowed", key, code="too-costly"
                )
            # A repeated key (same parameter, same direction) never changes the order: dropped.
            keys = list(dict.fromkeys(keys))
            if len(keys) > self.limits.max_sort_keys:
                raise SearchError(
                    f"_sort has {len(keys)} different keys; at most {self.limits.max_sort_keys} are allowed (each"
                    " costs a probe per match)", key, code="too-costly",
                )
            query.sort = [self._sort_key(query.rtype, k) for k in keys]
            raw = ",".join(keys)
        elif key in ("_include", "_revinclude", "_include:iterate", "_revinclude:iterate"):
            include = _include(raw, key)
            if key == "_include" and include.source != query.rtype:
                hint = f" (or use _include:iterate={raw} to follow it from included resources)"
                raise SearchError(f"_include must start with {query.rtype}{hint}", key)
            target_param = self.registry.get(include.source, include.param)
            if include.param != WILDCARD and (target_param is None or target_param.type != "reference"):
                raise SearchError(f"{include.source} has no reference parameter {include.param!r}", key)
            if include.target is not None and include.target not in RESOURCE_TYPES:
                raise SearchError(f"{key}: unknown resource type {include.target[:40]!r}", key)
            chosen = query.includes if key.startswith("_include") else query.revincludes
            if include in chosen:
                return  # a repeat would only run the same query again
            if len(query.includes) + len(query.revincludes) >= self.limits.max_includes:
                raise SearchError(
                    f"too many _include and _revinclude values: at most {self.limits.max_includes}",
                    key, code="too-costly",
                )
            chosen.append(include)
        elif key in ("_format", "_pretty"):
            return
        else:
            self._unknown(query, key, f"unsupported result parameter {key!r}", strict)
            return
        if key not in ("_offset", "_snapshot", "_cursor", "_format", "_pretty"):
            query.used.append((key, raw))

    def _sort_key(self, rtype: str, key: str) -> SortKey:
        descending = key.startswith("-")
        code = key[1:] if descending else key
        if code in ("_id", "_lastUpdated"):
            return SortKey(code, None, descending)
        param = self.registry.get(rtype, code)
        if param is None or param.path is None:
            raise SearchError(f"cannot sort {rtype} by {code!r}", "_sort", "not-supported")
        return SortKey(code, param, descending)


#: sort keys whose values are numbers in the index (the others are text)
_NUMERIC_SORT = frozenset({"date", "number"})


def encode_cursor(rid: int, keys: Sequence[Any]) -> str:
    """The ``_cursor`` of a ``next`` link: a page's last match (its row id and sort key values)."""
    return base64.urlsafe_b64encode(jsonio.dumps([rid, list(keys)])).decode("ascii").rstrip("=")


def decode_cursor(raw: str, sort: Sequence[SortKey]) -> tuple[int, tuple[Any, ...]]:
    """A ``_cursor`` as (row id, key values), each value checked against its sort key's type (a
    value of another type could not be compared in SQL); 400 when it is not one this server made."""
    try:
        data = jsonio.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        data = None
    if not (isinstance(data, list) and len(data) == 2 and isinstance(data[1], list)):
        raise SearchError("_cursor is not a cursor of this server's paging links", "_cursor")
    rid, values = data
    if type(rid) is not int or rid < 0 or len(values) != len(sort):
        raise SearchError("_cursor does not belong to this search's paging links", "_cursor")
    keys: list[Any] = []
    for key, value in zip(sort, values, strict=True):
        numeric = key.code == "_lastUpdated" or (key.param is not None and key.param.table in _NUMERIC_SORT)
        if value is None and key.param is not None:  # a resource without the key (never _id/_lastUpdated)
            keys.append(None)
        elif numeric and isinstance(value, int | float) and not isinstance(value, bool):
            keys.append(float(value))
        elif not numeric and isinstance(value, str) and "\x00" not in value:
            keys.append(value)
        else:
            raise SearchError("_cursor does not belong to this search's paging links", "_cursor")
    return rid, tuple(keys)


# Integers from URLs (paging, versions) this long are past any row and would overflow SQL integers.
MAX_INT_DIGITS = 15


def non_negative_int(raw: str, key: str, *, cap: int | None = None) -> int:
    """A paging number: ASCII digits only (``str.isdigit`` also passes "²"); above ``cap`` it is ``cap``."""
    if not (raw.isascii() and raw.isdigit()):
        raise SearchError(f"{key} must be a non-negative integer", key)
    if len(raw) > MAX_INT_DIGITS:
        if cap is None:
            raise SearchError(f"{key} is too large", key)
        return cap
    return int(raw) if cap is None else min(int(raw), cap)


def _prefix(item: str) -> tuple[str, str]:
    if len(item) > 2 and item[:2] in PREFIXES and not item[:2].isdigit():
        return item[:2], item[2:]
    return "eq", item


def _date_value(item: str, key: str) -> DateValue:
    prefix, text = _prefix(item)
    try:
        low, high = date_range(text)
    except DateFormatError as exc:
        raise SearchError(f"{key}: {exc}", key) from exc
    return DateValue(prefix, low, high)


def _number_value(item: str, key: str, quantity: bool) -> NumberValue:
    prefix, text = _prefix(item)
    system = code = None
    if quantity and "|" in text:
        text, system, code = (text.split("|") + ["", ""])[:3]
    if not _NUMBER_RE.match(text):
        raise SearchError(f"{key}: {text!r} is not a number", key)
    value = float(text)
    mantissa = text.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    # The ends in decimal arithmetic, then each the float nearest it, as stored values are:
    # 5.4 - 0.05 in floats is 5.3500000000000005, above the stored 5.35 the range holds.
    try:
        with localcontext(prec=60):
            exact, half = Decimal(text), Decimal(5).scaleb(-decimals - 1)
            low, high = float(exact - half), float(exact + half)
    except ArithmeticError:  # an exponent past what decimals hold: the float value's own range
        low, high = value - 0.5 * 10.0**-decimals, value + 0.5 * 10.0**-decimals
    return NumberValue(prefix, value, low, high, system or None, code or None)


def _include(raw: str, key: str) -> Include:
    pieces = raw.split(":")
    if pieces[0] == WILDCARD:
        raise SearchError(f"{key}={raw}: a wildcard source type is not supported; name the type ({key}=Type:*)",
                          key, "not-supported")
    if len(pieces) not in (2, 3) or not all(pieces):
        raise SearchError(f"{key} must look like Type:param[:TargetType]", key)
    target = pieces[2] if len(pieces) == 3 else None
    return Include(pieces[0], pieces[1], target, iterate=key.endswith(":iterate"))
