"""Converters: the ``| name(args)`` steps of a mapping expression.

A converter takes the collection the previous step produced and returns a new one. Except
``default``, ``first`` and ``join``, converters work item by item and drop blank items
(``None`` and empty or all-space strings): an unanswered question is absent, not an error.
Bad values raise ``MappingError`` naming the source path and the value.

=====================  ================================================================
``string``             scalar → text (``true``/``false`` for booleans)
``trim`` ``lower``     text clean-up
``upper``
``strip_prefix(p)``    drop a leading ``p`` (ODK/Kobo ``uuid:`` instance ids)
``integer``            ``"7"`` → 7; error unless a whole number
``decimal``            ``"48.5"`` → 48.5
``multiply(f)``        number × f (unit normalisation, e.g. MUAC cm → mm)
``boolean``            yes/no, true/false, y/n, 1/0 → true/false
``date``               ISO date (a date-time keeps its date part); partial dates allowed
``date(format)``       a date written ``dd/mm/yyyy`` (any order of dd, mm, yyyy, any
                       separator) or a spreadsheet serial day (``excel``) → ISO date;
                       ISO dates are read too
``datetime``           ISO date-time; no zone means UTC (Kobo ``_submission_time``)
``epoch_ms``           milliseconds since 1970 → date-time (CHT ``reported_date``)
``epoch_s``            seconds since 1970 → date-time
``to_epoch_ms``        date-time → milliseconds since 1970 (outbound CHT ``reported_date``)
``split(sep)``         ``"a b"`` → ``a``, ``b`` (default: whitespace; select_multiple)
``join(sep)``          collection → one text
``first``              only the first item
``default(v)``         ``v`` when the collection is empty
``coding(table)``      code → Coding via a ConceptMap (first target)
``concept(table)``     code → CodeableConcept with every target of the ConceptMap
``code(table)``        code → target code text (FHIR ``code`` fields: gender, priority)
``ref(Type)``          entity key → ``{"reference": "Type/<deterministic id>"}``
``uuid(Type)``         entity key → the deterministic id alone
``human_name(order)``  "Aisha Nakato" → HumanName: ``given_first`` (default; last part is
                       the family name), ``family_first``, ``text_only``; particles
                       ("van der", "dos", "Ti") stay with the word after them
``birth_date_from_age(unit)``  [date, age] (``%visit_date.combine(age)``) → estimated
                       birth date; unit ``years`` (default), ``months``, ``weeks``, ``days``
``estimated``          any answered value → the ``_birthDate`` extension saying "estimated"
``position``           "lat lon alt acc", GeoJSON Point or {latitude, longitude} →
                       Location.position
``wrap(key)``          v → ``{key: v}`` (e.g. Group.member from a list of refs)
``entries``            object → one ``{key, value}`` item per member (yes/no groups)
``present``            true if any item is not blank, else false (for ``when``)
``required``           the items as they are; none (or only blank ones) is an error naming the
                       field (the key of an entity another record makes: a visit's patient)
=====================  ================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ConfigError
from gateway.mapping.conceptmaps import ConceptTable
from gateway.mapping.errors import MappingError, quote
from gateway.mapping.ids import entity_id
from gateway.mapping.values import (
    AGE_UNITS,
    ESTIMATED_DATE_EXTENSION,
    NAME_ORDERS,
    birth_date_from_age,
    blank,
    date_pattern,
    fail,
    from_epoch,
    human_name,
    position,
    to_boolean,
    to_date,
    to_date_as,
    to_datetime,
    to_decimal,
    to_epoch_ms,
    to_integer,
    to_text,
)

__all__ = ["CONVERTERS", "CompileContext", "Converter", "ConverterSpec", "build_converter"]

Converter = Callable[[list[Any]], list[Any]]


@dataclass(slots=True)
class CompileContext:
    """What expressions may bind at compile time: source system, code tables, constants."""

    system: str
    tables: dict[str, ConceptTable] = field(default_factory=dict)
    tables_used: set[str] = field(default_factory=set)
    #: variables with one value per mapping (%system, %mapping, %version): folded at load
    constants: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConverterSpec:
    """A converter's argument types (``str``, ``float`` or ``object``) and its factory."""

    name: str
    params: tuple[type, ...]
    required: int
    factory: Callable[[list[Any], CompileContext, str], Converter]
    fresh: bool = False  # every object it returns is newly built (callers need not copy it)


class ConverterArgError(ConfigError):
    """A converter was given wrong arguments in a mapping file."""


def _per_item(fn: Callable[[Any], Any]) -> Converter:
    def run(values: list[Any]) -> list[Any]:
        return [
            fn(value)
            for value in values
            if value is not None and (type(value) is not str or (value and not value.isspace()))
        ]

    return run


def _lookup(table: ConceptTable, value: Any, path: str) -> tuple[dict[str, str], ...]:
    code = to_text(value, path).strip()
    codings = table.lookup(code)
    if codings is None:
        raise MappingError(path, f"code {quote(code)} is not in ConceptMap {table.id!r}", code="code-invalid")
    return codings


def _table_converter(
    shape: str,
) -> Callable[[list[Any], CompileContext, str], Converter]:
    def factory(args: list[Any], ctx: CompileContext, path: str) -> Converter:
        table = ctx.tables.get(args[0])
        if table is None:
            raise ConverterArgError(f"unknown ConceptMap {args[0]!r}")
        ctx.tables_used.add(table.id)

        def run(values: list[Any]) -> list[Any]:
            out: list[Any] = []
            for value in values:
                if blank(value):
                    continue
                codings = _lookup(table, value, path)
                if not codings:
                    continue
                if shape == "coding":
                    out.append(dict(codings[0]))
                elif shape == "code":
                    out.append(codings[0]["code"])
                else:
                    concept: dict[str, Any] = {"coding": [dict(coding) for coding in codings]}
                    text = table.text(to_text(value, path).strip())
                    if text:
                        concept["text"] = text
                    out.append(concept)
            return out

        return run

    return factory


def _ref_factory(as_reference: bool) -> Callable[[list[Any], CompileContext, str], Converter]:
    def factory(args: list[Any], ctx: CompileContext, path: str) -> Converter:
        resource_type = args[0]
        if not re.match(r"^[A-Z][A-Za-z]+$", resource_type):
            raise ConverterArgError(f"{resource_type!r} is not a resource type")
        system = ctx.system

        def one(value: Any) -> Any:
            key = to_text(value, path).strip()
            rid = entity_id(system, resource_type, key)
            return {"reference": f"{resource_type}/{rid}"} if as_reference else rid

        return _per_item(one)

    return factory


def _simple(fn: Callable[[Any, str], Any]) -> Callable[[list[Any], CompileContext, str], Converter]:
    def factory(args: list[Any], ctx: CompileContext, path: str) -> Converter:
        return _per_item(lambda value: fn(value, path))

    return factory


def _human_name(args: list[Any], ctx: CompileContext, path: str) -> Converter:
    order = args[0] if args else "given_first"
    if order not in NAME_ORDERS:
        raise ConverterArgError(f"human_name: order {order!r} must be one of {', '.join(NAME_ORDERS)}")
    return _per_item(lambda value: human_name(value, path, order))


def _date(args: list[Any], ctx: CompileContext, path: str) -> Converter:
    if not args:
        return _per_item(lambda value: to_date(value, path))
    fmt = args[0]
    try:
        pattern = date_pattern(fmt)
    except ValueError as exc:
        raise ConverterArgError(f"date: {exc}") from None
    return _per_item(lambda value: to_date_as(value, path, fmt, pattern))


def _birth_date_from_age(args: list[Any], ctx: CompileContext, path: str) -> Converter:
    unit = args[0] if args else "years"
    if unit not in AGE_UNITS:
        raise ConverterArgError(f"birth_date_from_age: unit {unit!r} must be one of {', '.join(AGE_UNITS)}")

    def run(values: list[Any]) -> list[Any]:
        kept = [value for value in values if not blank(value)]
        if len(kept) < 2:
            return []  # no age given: nothing to estimate
        if len(kept) > 2:
            raise MappingError(path, "birth_date_from_age needs [date, age]: write %date.combine(age)")
        return [birth_date_from_age(kept[0], kept[1], unit, path)]

    return run


def _estimated(args: list[Any], ctx: CompileContext, path: str) -> Converter:
    def run(values: list[Any]) -> list[Any]:
        if not any(not blank(value) for value in values):
            return []
        return [{"extension": [{"url": ESTIMATED_DATE_EXTENSION, "valueBoolean": True}]}]

    return run


def _split(args: list[Any], ctx: CompileContext, path: str) -> Converter:
    separator = args[0] if args else None

    def run(values: list[Any]) -> list[Any]:
        out: list[Any] = []
        for value in values:
            if blank(value):
                continue
            if type(value) is not str:
                raise fail(path, value, "a text value to split")
            out.extend(part.strip() for part in value.split(separator) if part.strip())
        return out

    return run


def _join(args: list[Any], ctx: CompileContext, path: str) -> Converter:
    separator = args[0] if args else " "

    def run(values: list[Any]) -> list[Any]:
        parts = [to_text(value, path) for value in values if not blank(value)]
        return [separator.join(parts)] if parts else []

    return run


def _default(args: list[Any], ctx: CompileContext, path: str) -> Converter:
    fallback = args[0]

    def run(values: list[Any]) -> list[Any]:
        kept = [value for value in values if not blank(value)]
        return kept if kept else [fallback]

    return run


def _first(args: list[Any], ctx: CompileContext, path: str) -> Converter:
    def run(values: list[Any]) -> list[Any]:
        for value in values:
            if not blank(value):
                return [value]
        return []

    return run


def _multiply(args: list[Any], ctx: CompileContext, path: str) -> Converter:
    factor = float(args[0])
    integral = factor.is_integer()

    def one(value: Any) -> Any:
        if type(value) is int and integral:
            return value * int(factor)
        return round(to_decimal(value, path) * factor, 10)

    return _per_item(one)


def _strip_prefix(args: list[Any], ctx: CompileContext, path: str) -> Converter:
    prefix = args[0]

    def one(value: Any) -> Any:
        text = to_text(value, path)
        return text[len(prefix) :] if text.startswith(prefix) else text

    return _per_item(one)


def _wrap(args: list[Any], ctx: CompileContext, path: str) -> Converter:
    key = args[0]
    return _per_item(lambda value: {key: value})


def _entries(args: list[Any], ctx: CompileContext, path: str) -> Converter:
    def run(values: list[Any]) -> list[Any]:
        out: list[Any] = []
        for value in values:
            if type(value) is not dict:
                raise fail(path, value, "an object (a group of questions)")
            out.extend({"key": key, "value": item} for key, item in value.items() if not blank(item))
        return out

    return run


def _present(args: list[Any], ctx: CompileContext, path: str) -> Converter:
    return lambda values: [any(not blank(value) for value in values)]


def _required(args: list[Any], ctx: CompileContext, path: str) -> Converter:
    def run(values: list[Any]) -> list[Any]:
        kept = [value for value in values if not blank(value)]
        if not kept:
            raise MappingError(path, "the record has no value here, and one is required", code="required")
        return kept

    return run


CONVERTERS: dict[str, ConverterSpec] = {
    spec.name: spec
    for spec in [
        ConverterSpec("string", (), 0, _simple(to_text)),
        ConverterSpec("trim", (), 0, _simple(lambda v, p: to_text(v, p).strip())),
        ConverterSpec("lower", (), 0, _simple(lambda v, p: to_text(v, p).lower())),
        ConverterSpec("upper", (), 0, _simple(lambda v, p: to_text(v, p).upper())),
        ConverterSpec("strip_prefix", (str,), 1, _strip_prefix),
        ConverterSpec("integer", (), 0, _simple(to_integer)),
        ConverterSpec("decimal", (), 0, _simple(to_decimal)),
        ConverterSpec("multiply", (float,), 1, _multiply),
        ConverterSpec("boolean", (), 0, _simple(to_boolean)),
        ConverterSpec("date", (str,), 0, _date),
        ConverterSpec("datetime", (), 0, _simple(to_datetime)),
        ConverterSpec("epoch_ms", (), 0, _simple(lambda v, p: from_epoch(v, p, 1000))),
        ConverterSpec("epoch_s", (), 0, _simple(lambda v, p: from_epoch(v, p, 1))),
        ConverterSpec("to_epoch_ms", (), 0, _simple(to_epoch_ms)),
        ConverterSpec("split", (str,), 0, _split),
        ConverterSpec("join", (str,), 0, _join),
        ConverterSpec("first", (), 0, _first),
        ConverterSpec("default", (object,), 1, _default),
        ConverterSpec("coding", (str,), 1, _table_converter("coding"), fresh=True),
        ConverterSpec("concept", (str,), 1, _table_converter("concept"), fresh=True),
        ConverterSpec("code", (str,), 1, _table_converter("code")),
        ConverterSpec("ref", (str,), 1, _ref_factory(True), fresh=True),
        ConverterSpec("uuid", (str,), 1, _ref_factory(False)),
        ConverterSpec("human_name", (str,), 0, _human_name, fresh=True),
        ConverterSpec("position", (), 0, _simple(position), fresh=True),
        ConverterSpec("birth_date_from_age", (str,), 0, _birth_date_from_age),
        ConverterSpec("estimated", (), 0, _estimated, fresh=True),
        ConverterSpec("wrap", (str,), 1, _wrap),
        ConverterSpec("entries", (), 0, _entries),
        ConverterSpec("present", (), 0, _present),
        ConverterSpec("required", (), 0, _required),
    ]
}


def build_converter(name: str, args: list[Any], ctx: CompileContext, path: str) -> Converter:
    """Bind one converter to its arguments; raises ``ConverterArgError`` on misuse."""
    spec = CONVERTERS.get(name)
    if spec is None:
        raise ConverterArgError(
            f"unknown converter {name!r} (known: {', '.join(sorted(CONVERTERS))}; "
            "for a FHIRPath union write a.union(b), not a | b)"
        )
    if not spec.required <= len(args) <= len(spec.params):
        count = (
            str(spec.required) if spec.required == len(spec.params) else f"{spec.required}-{len(spec.params)}"
        )
        raise ConverterArgError(f"{name} takes {count} argument(s), got {len(args)}")
    for arg, expected in zip(args, spec.params, strict=False):
        if expected is str and not isinstance(arg, str):
            raise ConverterArgError(f"{name}: argument {arg!r} must be a quoted text")
        if expected is float and (isinstance(arg, bool) or not isinstance(arg, int | float)):
            raise ConverterArgError(f"{name}: argument {arg!r} must be a number")
    return spec.factory(list(args), ctx, path)
