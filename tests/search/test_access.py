"""``QueryParser.parse`` checks every type a query searches or returns against a ``SearchAccess``."""

from __future__ import annotations

import pytest

from gateway.errors import FhirError
from gateway.search.access import TRUSTED, SearchAccess
from gateway.search.query import Include, QueryParser
from gateway.search.registry import default_registry

PARSER = QueryParser(default_registry(), 50, 1000)


def access(*scopes: tuple[str, str]) -> SearchAccess:
    granted = dict(scopes)
    return SearchAccess(lambda rtype, letter: letter in granted.get(rtype, ""))


@pytest.mark.parametrize(("rtype", "items", "needed"), [
    ("Patient", [("family", "x")], "Patient"),
    ("Patient", [("_has:Observation:subject:code", "x")], "Observation"),
    ("Observation", [("subject:Patient.family", "x")], "Patient"),
])  # fmt: skip
def test_filtering_on_a_type_needs_search_on_it(rtype: str, items: list[tuple[str, str]], needed: str) -> None:
    with pytest.raises(FhirError) as raised:
        PARSER.parse(rtype, items, access=access(("Patient", "rs"), ("Observation", "rs"), (needed, "r")))
    assert raised.value.status == 403 and f"system/{needed}.s" in str(raised.value)
    PARSER.parse(rtype, items, access=access(("Patient", "s"), ("Observation", "s")))


def test_includes_need_read_or_search_on_the_types_returned() -> None:
    observations = access(("Observation", "s"), ("Group", "r"))
    query = PARSER.parse("Observation", [("_include", "Observation:subject")], access=observations)
    assert query.includes == [Include("Observation", "subject", "Group")]
    for key, value in (("_include", "Observation:subject:Patient"), ("_revinclude", "Provenance:target")):
        with pytest.raises(FhirError):
            PARSER.parse("Observation", [(key, value)], access=observations)
    with pytest.raises(FhirError):
        PARSER.parse("Observation", [("_include", "Observation:subject")], access=access(("Observation", "s")))
    untouched = PARSER.parse("Observation", [("_include", "Observation:subject")], access=TRUSTED)
    assert untouched.includes == [Include("Observation", "subject", None)]
