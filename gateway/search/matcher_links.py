"""Searches through ``Patient.link``, refused to a client whose data policy limits rows.

Such a client reads Patients without the links the identity matcher wrote
(``gateway.fhir.deidentification.without_matcher_links``): they name records the policy may
hide, and say that two records are one person. A search through ``link`` would tell the
same: a filter (``Patient?link=Patient/x``, ``link:missing``), a sort, a chain or ``_has``
through it, an ``_include`` or ``_revinclude`` of it. The index rows do not tell the
matcher's links from those clients wrote, so every one of them is refused (403).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.errors import FhirError

if TYPE_CHECKING:  # the query module calls this one
    from gateway.search.query import Criterion, SearchQuery
    from gateway.search.registry import SearchParam

__all__ = ["refuse_link_searches"]


def refuse_link_searches(query: SearchQuery) -> None:
    """403 for a criterion, sort key, ``_include`` or ``_revinclude`` of ``query`` through ``Patient.link``."""
    for criterion in query.criteria:
        _check(query.rtype, criterion)
    for key in query.sort:
        if key.param is not None and _through_link(query.rtype, key.param):
            raise _refused(f"_sort={key.code}")
    for inc in query.includes:
        if inc.source == "Patient" and inc.param in ("link", "*"):
            raise _refused(f"_include=Patient:{inc.param}")
    for inc in query.revincludes:
        if inc.source == "Patient" and inc.param in ("link", "*"):
            raise _refused(f"_revinclude=Patient:{inc.param}")


def _check(rtype: str, c: Criterion) -> None:
    if c.has is not None:
        source, ref_name, inner = c.has
        if source == "Patient" and ref_name == "link":
            raise _refused(c.code)
        _check(source, inner)
        return
    if _through_link(rtype, c.param):
        raise _refused(c.code)
    if c.chain is not None:
        _check(c.chain[0], c.chain[1])


def _through_link(rtype: str, param: SearchParam) -> bool:
    if rtype != "Patient" or param.path is None:
        return False
    return any(text.strip().split(".")[1:2] == ["link"] for text in param.path.texts)


def _refused(where: str) -> FhirError:
    return FhirError(
        f"{where}: refused, this client's data policy limits the records it sees, and Patient.link"
        " names records of the same person the policy may hide",
        status=403, code="forbidden", expression=[where],
    )  # fmt: skip
