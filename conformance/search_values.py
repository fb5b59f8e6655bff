"""Search probes: for a stored resource and a SearchParameter, a value that finds it and one that must not.

The value comes from evaluating the parameter's FHIRPath expression on the resource with
``fhirpathpy`` (R4 model), then turning the first usable result into the query syntax of
the parameter's type (search.html#token, #string, #date, #reference, #uri, #number,
#quantity). ``composite`` and ``special`` parameters are not probed.

``fhirpathpy`` has no ``resolve()``, so ``.where(resolve() is Patient)`` is evaluated as
"references whose type is Patient".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models as fhirpath_models

__all__ = ["SearchParamDef", "SearchProbe", "NotProbed", "load_definitions", "probe"]

NO_MATCH = "zzqx-conformance-nomatch"
_NO_MATCH_URL = "http://conformance.invalid/nomatch"
_NO_MATCH_NUMBER = "-987654321"
_RESOLVE = re.compile(r"\.where\(resolve\(\) is ([A-Za-z]+)\)")
_ESCAPE = re.compile(r"([\\,$|])")
_MAX_STRING = 60
_UNSAFE = set("\\,$|")


class NotProbed(Exception):
    """The parameter cannot be probed on this resource (no value, or an unsupported kind)."""


@dataclass(frozen=True, slots=True)
class SearchParamDef:
    """One search parameter definition (``gateway/search/data/search-parameters.json``)."""

    url: str
    code: str
    base: tuple[str, ...]
    type: str
    expression: str
    target: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchProbe:
    """``code=match`` must find the resource; ``code=miss`` must not."""

    code: str
    match: str
    miss: str


def load_definitions(text: str | None = None) -> list[SearchParamDef]:
    """Parse search parameter definitions (default: the gateway's bundled R4 set)."""
    if text is None:
        text = resources.files("gateway.search").joinpath("data", "search-parameters.json").read_text("utf-8")
    return [
        SearchParamDef(
            url=item["url"],
            code=item["code"],
            base=tuple(item.get("base", ())),
            type=item["type"],
            expression=item.get("expression") or "",
            target=tuple(item.get("target", ())),
        )
        for item in json.loads(text)
    ]


@cache
def _compiled(expression: str) -> tuple[Callable[..., list[Any]], frozenset[str]]:
    targets = frozenset(_RESOLVE.findall(expression))
    plain = _RESOLVE.sub("", expression)
    return compile_fhirpath(plain, fhirpath_models["r4"]), targets


def _values(param: SearchParamDef, resource: dict[str, Any]) -> tuple[list[Any], frozenset[str]]:
    if not param.expression:
        raise NotProbed("no FHIRPath expression")
    try:
        function, targets = _compiled(param.expression)
        return list(function(resource, {})), targets
    except Exception as exc:  # fhirpathpy raises bare Exceptions for unsupported functions
        raise NotProbed(f"cannot evaluate the expression ({type(exc).__name__})") from exc


def _escape(value: str) -> str:
    return _ESCAPE.sub(r"\\\1", value)


def _simple_first(candidates: Iterable[str]) -> str:
    """Prefer a value without characters that need escaping, else the first one escaped."""
    listed = [c for c in candidates if c]
    for value in listed:
        if not _UNSAFE & set(value):
            return value
    if listed:
        return _escape(listed[0])
    raise NotProbed("no value")


def _token(values: list[Any]) -> SearchProbe:
    found: list[tuple[str | None, str]] = []
    for value in values:
        if isinstance(value, bool):
            return SearchProbe("", str(value).lower(), str(not value).lower())
        if isinstance(value, str):
            found.append((None, value))
        elif isinstance(value, dict):
            codings: list[Any] = value["coding"] if isinstance(value.get("coding"), list) else [value]
            for coding in codings:
                if not isinstance(coding, dict):
                    continue
                key = "code" if "code" in coding else "value" if "value" in coding else None
                if key and isinstance(coding[key], str):
                    found.append(
                        (coding.get("system") if isinstance(coding.get("system"), str) else None, coding[key])
                    )
    for system, code in found:
        if _UNSAFE & set(code) or (system and _UNSAFE & set(system)):
            continue
        if system:
            return SearchProbe("", f"{system}|{code}", f"{system}|{NO_MATCH}")
        return SearchProbe("", code, NO_MATCH)
    raise NotProbed("no token value")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        out: list[str] = []
        for key in ("family", "given", "text", "city", "line", "district", "state", "postalCode", "country"):
            item = value.get(key)
            out.extend(item if isinstance(item, list) else [item] if isinstance(item, str) else [])
        return [s for s in out if isinstance(s, str)]
    return []


def _string(values: list[Any]) -> SearchProbe:
    # Leading/trailing blanks would make "starts with" depend on how a server trims.
    candidates = [s for value in values for s in _strings(value) if s == s.strip()]
    # String search is "starts with", so a long value is probed by its first words.
    short = [c if len(c) <= _MAX_STRING else c[:_MAX_STRING].rsplit(" ", 1)[0] for c in candidates]
    return SearchProbe("", _simple_first(s for s in short if s.strip()), NO_MATCH)


def _date(values: list[Any]) -> SearchProbe:
    for value in values:
        if isinstance(value, str) and value[:1].isdigit() and len(value) >= 4 and ":" not in value[:4]:
            return SearchProbe("", f"eq{value}", "lt1000-01-01")
        if isinstance(value, dict):
            period = value.get("boundsPeriod") if isinstance(value.get("repeat"), dict) else value
            events = value.get("event")
            if isinstance(events, list) and events and isinstance(events[0], str):
                return SearchProbe("", f"eq{events[0]}", "lt1000-01-01")
            if isinstance(period, dict):
                start, end = period.get("start"), period.get("end")
                if isinstance(start, str):
                    return SearchProbe("", f"ge{start}", "lt1000-01-01")
                if isinstance(end, str):
                    return SearchProbe("", f"le{end}", "gt9000-01-01")
    raise NotProbed("no date value")


def _reference_type(reference: str) -> str | None:
    parts = reference.split("?")[0].rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return parts[-2] if len(parts) >= 2 else None


def _reference(values: list[Any], targets: frozenset[str], declared: tuple[str, ...]) -> SearchProbe:
    for value in values:
        if isinstance(value, dict):
            reference = value.get("reference")
        elif isinstance(value, str):
            reference = value  # a canonical or uri element searched as a reference
        else:
            continue
        if not isinstance(reference, str) or reference.startswith(("#", "urn:")) or "?" in reference:
            continue
        if _UNSAFE & set(reference):
            continue
        rtype = _reference_type(reference)
        if targets and rtype not in targets:
            continue
        if rtype and rtype[:1].isupper() and not reference.startswith("http"):
            return SearchProbe("", reference, f"{rtype}/{NO_MATCH}")
        return SearchProbe("", reference, _NO_MATCH_URL)
    raise NotProbed("no reference value")


def _number(values: list[Any], quantity: bool) -> SearchProbe:
    for value in values:
        number = value.get("value") if quantity and isinstance(value, dict) else value
        if isinstance(number, bool) or not isinstance(number, int | float | Decimal):
            continue
        return SearchProbe("", str(number), _NO_MATCH_NUMBER)
    raise NotProbed("no numeric value")


def probe(param: SearchParamDef, resource: dict[str, Any]) -> SearchProbe:
    """A matching and a non-matching search value of ``param`` for ``resource`` (or ``NotProbed``)."""
    if param.type in ("composite", "special"):
        raise NotProbed(f"{param.type} parameters are not probed")
    values, targets = _values(param, resource)
    if not values:
        raise NotProbed("the resource has no value for it")
    if param.type == "token":
        found = _token(values)
    elif param.type == "string":
        found = _string(values)
    elif param.type == "date":
        found = _date(values)
    elif param.type == "reference":
        found = _reference(values, targets, param.target)
    elif param.type == "uri":
        uri = _simple_first(v for v in values if isinstance(v, str))
        found = SearchProbe("", uri, _NO_MATCH_URL)
    elif param.type in ("number", "quantity"):
        found = _number(values, param.type == "quantity")
    else:
        raise NotProbed(f"unknown parameter type {param.type}")
    return SearchProbe(param.code, found.match, found.miss)
