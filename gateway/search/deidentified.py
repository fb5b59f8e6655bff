"""What a de-identifying data policy strips, and the searches that would give it back.

A client whose data policy says ``deidentify`` reads every resource without narrative,
identifiers, notes and reference display texts, and persons without names, contacts,
telecoms, street, city and postal code, with only the year of birth and death dates
(``gateway.fhir.deidentification`` applies the recipe). Matching is a read too: a search by
a stripped element would tell whether a guessed name, identifier or full birth date belongs
to a resource, and ``_sort`` by it would order resources by it. So such a client may not
filter or sort by a parameter whose path reaches a stripped element (403 naming it), and
searches birth and death dates by year only (``birthdate=1979``, ``birthdate=ge1979``; not ``ap``,
whose window ends on a day).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gateway.errors import FhirError

if TYPE_CHECKING:  # the query module calls this one
    from gateway.search.query import Criterion, SearchQuery
    from gateway.search.registry import SearchParam

__all__ = ["ADDRESS_KEPT", "EVERYWHERE", "PERSON_ELEMENTS", "PERSONS", "YEAR_ONLY", "refuse_identifying"]

#: Stripped from every resource (``identifier`` at any depth: a Reference's too).
EVERYWHERE = ("text", "identifier", "note", "comment")
PERSONS = frozenset({"Patient", "RelatedPerson", "Person", "Practitioner"})
#: Stripped from persons.
PERSON_ELEMENTS = ("name", "telecom", "photo", "contact", "communication")
#: The parts of a person's address kept.
ADDRESS_KEPT = ("use", "type", "district", "state", "country")
#: Person dates cut to their year.
YEAR_ONLY = ("birthDate", "deceasedDateTime")

_HIDDEN, _YEAR = "hidden", "year"
#: Year values a date of a de-identified person may be searched by: ``ap`` is left out, since its
#: window is 10% of the time from the value to now, whose edges fall on days, not years.
_PREFIX = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb)?(\d{4})$")


def refuse_identifying(query: SearchQuery) -> None:
    """403 for a criterion or sort key of ``query`` that would match or order by what de-identification strips."""
    for criterion in query.criteria:
        _check(query.rtype, criterion)
    for key in query.sort:
        if key.param is not None and _reveals(query.rtype, key.param) is not None:
            raise _refused(f"_sort={key.code}", "orders by what it strips")


def _check(rtype: str, c: Criterion) -> None:
    if c.has is not None:
        _check(c.has[0], c.has[2])
        return
    if c.chain is not None:
        _check(c.chain[0], c.chain[1])
        return
    reveals = _reveals(rtype, c.param)
    if reveals == _HIDDEN:
        raise _refused(c.code, "strips what it matches")
    if reveals == _YEAR and c.missing is None:
        for value in c.raw.split(","):
            if not _PREFIX.match(value.strip()):
                raise FhirError(
                    f"{c.code}: this client's data policy shows only the year of this date; search by year"
                    " (e.g. 1979 or ge1979)",
                    status=403, code="forbidden", expression=[c.code],
                )  # fmt: skip


def _refused(where: str, why: str) -> FhirError:
    return FhirError(
        f"{where}: refused, this client's data policy de-identifies resources and {why}",
        status=403, code="forbidden", expression=[where],
    )  # fmt: skip


def _reveals(rtype: str, param: SearchParam) -> str | None:
    """``hidden`` when the parameter's values are stripped, ``year`` when cut to their year, else None."""
    if param.path is None:
        return None  # _id, _lastUpdated: the gateway's own
    found: str | None = None
    for text in param.path.texts:
        elements = _elements(text)
        if not elements:
            continue
        first = elements[0]
        person = rtype in PERSONS
        if "identifier" in elements or first in EVERYWHERE:
            return _HIDDEN
        if person and first in PERSON_ELEMENTS:
            return _HIDDEN
        if person and first == "address" and (len(elements) == 1 or elements[1] not in ADDRESS_KEPT):
            return _HIDDEN
        if person and (first in YEAR_ONLY or first == "deceased"):
            found = _YEAR
    return found


def _elements(text: str) -> list[str]:
    """``Patient.telecom.where(system='phone')`` → ``["telecom", "where"]``: the element names after
    the type, arguments and ``as``/``is`` casts left out."""
    depth = 0
    bare: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0:
            bare.append(ch)
    path = "".join(bare).split(" ")[0]
    return [part for part in path.split(".")[1:] if part]
