"""Search index rows extracted from a resource at write time.

Values are interpreted by their JSON shape (a ``coding`` array is a CodeableConcept, a
``reference`` key a Reference, ``start``/``end`` a Period, …), so extraction needs no
model objects and stays cheap on the write path.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from gateway.search.dates import FAR_FUTURE, FAR_PAST, DateFormatError, date_range
from gateway.search.paths import Step, plain_key, split_reference
from gateway.search.registry import SearchParam

_HUMAN_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
#: ``ContactPoint.system`` codes: a value with one of them is a ContactPoint, not an Identifier.
_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


@dataclass(slots=True)
class IndexRows:
    """All index rows of one resource, by table."""

    token: list[tuple[str, str | None, str]] = field(default_factory=list)  # param, system, code
    string: list[tuple[str, str, str]] = field(default_factory=list)  # param, normalised, exact
    date: list[tuple[str, float, float]] = field(default_factory=list)  # param, low, high
    reference: list[tuple[str, str | None, str | None, str]] = field(
        default_factory=list
    )  # param, target type, target id, reference text
    number: list[tuple[str, float, str | None, str | None]] = field(
        default_factory=list
    )  # param, value, system, code


@lru_cache(maxsize=8192)
def normalise(text: str) -> str:
    """Case- and accent-insensitive form used for string search."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


class ExtractionPlan:
    """Which of a type's parameters a resource can have values for, told from its keys.

    A resource type has dozens of indexed parameters, and a resource fills a few of them;
    each parameter starts from one or a few resource keys (``CompiledPath.heads``), so a
    parameter none of whose keys the resource has is skipped without evaluating it.
    """

    __slots__ = ("params", "_by_key", "_by_base", "_always", "_chosen", "_compiled")

    def __init__(self, params: list[SearchParam]) -> None:
        self.params = params
        self._by_key: dict[str, list[int]] = {}
        self._by_base: dict[str, list[int]] = {}
        always: list[int] = []
        for index, param in enumerate(params):
            assert param.path is not None
            for head in param.path.heads:
                if not head:
                    always.append(index)
                elif head.endswith("[x]"):  # a choice element: its own name or name + Type
                    self._by_key.setdefault(head[:-3], []).append(index)
                    self._by_base.setdefault(head[:-3], []).append(index)
                else:
                    self._by_key.setdefault(head, []).append(index)
        self._always = tuple(sorted(set(always)))
        self._chosen: dict[tuple[str, ...], list[SearchParam]] = {}
        self._compiled: dict[tuple[str, ...], list[_Extractor]] = {}

    def candidates(self, resource: dict[str, Any]) -> list[SearchParam]:
        """The parameters worth evaluating on ``resource``, in registry order."""
        keys = tuple(resource)
        found = self._chosen.get(keys)
        if found is None:
            found = self._choose(keys)
            if len(self._chosen) < _MAX_KEY_SETS:  # resources of one source repeat a few key sets
                self._chosen[keys] = found
        return found

    def extractors(self, resource: dict[str, Any]) -> list[_Extractor]:
        """``candidates`` ready to run: each parameter's code, row handler and path parts, a part
        that starts with a plain key split into that key and the steps after it."""
        keys = tuple(resource)
        found = self._compiled.get(keys)
        if found is None:
            found = [_extractor(param) for param in self.candidates(resource)]
            if len(self._compiled) < _MAX_KEY_SETS:
                self._compiled[keys] = found
        return found

    def _choose(self, resource: tuple[str, ...]) -> list[SearchParam]:
        chosen = set(self._always)
        by_key, by_base = self._by_key, self._by_base
        for key in resource:
            found = by_key.get(key)
            if found:
                chosen.update(found)
            if by_base and not key.islower():
                cut = next((i for i, ch in enumerate(key) if ch.isupper()), 0)
                if cut:
                    found = by_base.get(key[:cut])
                    if found:
                        chosen.update(found)
        params = self.params
        return [params[index] for index in sorted(chosen)]


_MAX_KEY_SETS = 1024


#: A parameter ready to run on resources of one key set: code, row handler, and per path part
#: the resource key its first (plain field) step reads, or None, and the steps left to run.
_Extractor = tuple[str, Callable[[IndexRows, str, Any], None], tuple[tuple[str | None, tuple[Step, ...]], ...]]


def _extractor(param: SearchParam) -> _Extractor:
    assert param.path is not None
    parts: list[tuple[str | None, tuple[Step, ...]]] = []
    for steps in param.path.parts:
        key = plain_key(steps[0])
        parts.append((key, steps[1:]) if key is not None else (None, steps))
    return param.code, _HANDLERS[param.type], tuple(parts)


def index_rows(resource: dict[str, Any], params: list[SearchParam] | ExtractionPlan) -> IndexRows:
    """Extract the index rows of ``resource`` for the given parameters (or plan of them).

    With a plan, the parameters come compiled for the resource's key set (``extractors``):
    the same rows as evaluating every parameter's path (``CompiledPath.values``), with fewer
    calls and lists on the way.
    """
    if isinstance(params, ExtractionPlan):
        return _planned_rows(resource, params.extractors(resource))
    rows = IndexRows()
    for param in params:
        assert param.path is not None
        values = param.path.values(resource)
        if not values:
            continue
        handler = _HANDLERS[param.type]
        for value in values:
            handler(rows, param.code, value)
    return rows


def _planned_rows(resource: dict[str, Any], extractors: list[_Extractor]) -> IndexRows:
    rows = IndexRows()
    for code, handler, parts in extractors:
        for key, steps in parts:
            if key is not None:
                found = resource.get(key)
                if found is None:
                    continue
                current = found if isinstance(found, list) else [found]
            else:
                current = [resource]
            for step in steps:
                current = step(current)
                if not current:
                    break
            for value in current:
                handler(rows, code, value)
    return rows


def _token(rows: IndexRows, code: str, value: Any) -> None:
    out = rows.token
    if isinstance(value, str):
        out.append((code, None, value))
    elif isinstance(value, bool):
        out.append((code, None, "true" if value else "false"))
    elif isinstance(value, dict):
        codings = value.get("coding")
        if isinstance(codings, list):
            for coding in codings:
                if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    out.append((code, _str(coding.get("system")), coding["code"]))
        elif isinstance(value.get("code"), str):  # Coding, Quantity-as-token
            out.append((code, _str(value.get("system")), value["code"]))
        elif isinstance(value.get("value"), str):  # Identifier, ContactPoint
            system = _str(value.get("system"))
            if "use" in value and system is not None and system not in _CONTACT_SYSTEMS:
                # An Identifier with a use: one row under its system. A second, system-less row
                # (as a ContactPoint gets) would only add a false match for ``|value``.
                out.append((code, system, value["value"]))
                return
            out.append((code, system if "use" not in value else None, value["value"]))
            if "use" in value and system is not None:
                out.append((code, system, value["value"]))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _string(rows: IndexRows, code: str, value: Any) -> None:
    if isinstance(value, str):
        rows.string.append((code, normalise(value), value))
        return
    if not isinstance(value, dict):
        return
    parts = _HUMAN_NAME_PARTS if ("family" in value or "given" in value) else _ADDRESS_PARTS
    for part in parts:
        found = value.get(part)
        if isinstance(found, str):
            rows.string.append((code, normalise(found), found))
        elif isinstance(found, list):
            for item in found:
                if isinstance(item, str):
                    rows.string.append((code, normalise(item), item))


def _date(rows: IndexRows, code: str, value: Any) -> None:
    try:
        if isinstance(value, str):
            low, high = date_range(value)
            rows.date.append((code, low, high))
        elif isinstance(value, dict):
            if "start" in value or "end" in value:  # Period: open ends are unbounded
                start, end = value.get("start"), value.get("end")
                low = date_range(start)[0] if isinstance(start, str) else FAR_PAST
                high = date_range(end)[1] if isinstance(end, str) else FAR_FUTURE
                rows.date.append((code, low, high))
            events = value.get("event")  # Timing
            if isinstance(events, list):
                for event in events:
                    if isinstance(event, str):
                        low, high = date_range(event)
                        rows.date.append((code, low, high))
    except DateFormatError:
        return  # validation rejects bad dates before this; never fail a write here


def _reference(rows: IndexRows, code: str, value: Any) -> None:
    if isinstance(value, str):  # canonical: url[|version]
        parsed = split_reference(value.split("|", 1)[0])
        rows.reference.append((code, parsed[0] if parsed else None, parsed[1] if parsed else None, value))
        return
    if not isinstance(value, dict):
        return
    target = value.get("reference")
    if not isinstance(target, str):
        return
    parsed = split_reference(target)
    if parsed is None:
        rows.reference.append((code, _str(value.get("type")), None, target))
    elif "://" in target:
        # Another server's resource (Patient s1 there is not Patient s1 here): found by its URL
        # only, never by the local id, so no search, include, chain or compartment links them.
        rows.reference.append((code, parsed[0], None, target))
    else:
        rows.reference.append((code, parsed[0], parsed[1], target))


def _number(rows: IndexRows, code: str, value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        rows.number.append((code, float(value), None, None))
    elif isinstance(value, dict) and isinstance(value.get("value"), int | float):
        unit = value.get("code") if isinstance(value.get("code"), str) else value.get("unit")
        rows.number.append((code, float(value["value"]), _str(value.get("system")), _str(unit)))


_HANDLERS = {
    "token": _token,
    "uri": _token,
    "string": _string,
    "date": _date,
    "reference": _reference,
    "number": _number,
    "quantity": _number,
}
