"""Survivorship strategies: which member's value each golden element takes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.identity import ESTIMATED_BIRTHDATE, Survivorship, survive


def member(pid: str, when: str, source: str = "urn:chw-gateway:cht:demo", **elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "meta": {"lastUpdated": when, "source": source}, **elements}


OLD = member("a", "2026-01-01T00:00:00Z", "urn:chw-gateway:commcare:x", name=[{"family": "Menard"}],
             gender="male", birthDate="1979", telecom=[{"system": "phone", "value": "+509 3700 0000"}],
             identifier=[{"system": "s1", "value": "1"}])
MID = member("b", "2026-02-01T00:00:00Z", name=[{"family": "Ménard"}], gender="male", birthDate="1979-08-21",
             telecom=[{"system": "phone", "value": "3700 0000"}], identifier=[{"system": "s2", "value": "2"}])
NEW = member("c", "2026-03-01T00:00:00Z", name=[{"family": "Mesnard"}], gender="female", birthDate="1980-01-01",
             _birthDate={"extension": [{"url": ESTIMATED_BIRTHDATE, "valueBoolean": True}]},
             identifier=[{"system": "s1", "value": "1"},
                         {"system": "d", "value": "UID", "type": {"coding": [
                             {"system": "urn:chw-gateway:identifier-type", "code": "dhis2-uid"}]}}])


def test_the_default_rules() -> None:
    golden = survive([OLD, NEW, MID], Survivorship())
    assert golden["name"] == [{"family": "Mesnard"}]  # most recent
    assert golden["gender"] == "male"  # most frequent
    assert golden["birthDate"] == "1979-08-21" and "_birthDate" not in golden  # the full, non-estimated date
    assert golden["identifier"] == [{"system": "s1", "value": "1"}, {"system": "s2", "value": "2"}]  # union, no UIDs
    assert golden["telecom"] == [{"system": "phone", "value": "3700 0000"}]  # one phone, written two ways
    assert survive([NEW, OLD, MID], Survivorship()) == golden  # member order does not matter


def test_source_priority_and_a_rule_per_element() -> None:
    rules = Survivorship.model_validate({"source_priority": ["urn:chw-gateway:commcare"],
                                         "elements": {"name": "source_priority", "birthDate": "most_recent"}})
    golden = survive([OLD, MID, NEW], rules)
    assert golden == {"name": [{"family": "Menard"}], "birthDate": "1980-01-01",
                      "_birthDate": NEW["_birthDate"]}


def test_unknown_elements_and_strategies_are_refused() -> None:
    with pytest.raises(ValidationError):
        Survivorship.model_validate({"elements": {"nmae": "most_recent"}})
    with pytest.raises(ValidationError):
        Survivorship.model_validate({"elements": {"name": "newest"}})
