"""SMART v2 system scopes and the gateway's own scopes."""

from __future__ import annotations

import pytest

from gateway.auth import Principal, ScopeError, parse_scope, validate_scopes


def test_smart_v2_and_v1_forms() -> None:
    assert parse_scope("system/Patient.rs") == ("Patient", "rs")
    assert parse_scope("system/*.cruds") == ("*", "cruds")
    assert parse_scope("system/Observation.read") == ("Observation", "rs")
    assert parse_scope("system/*.write") == ("*", "cud")
    assert parse_scope("admin") is None
    with pytest.raises(ScopeError):
        parse_scope("system/Patient.sr")  # letters out of order


def test_principal_permissions_combine_scopes() -> None:
    who = Principal.of("emr", ("system/Patient.rs", "system/Observation.c", "ingest:cht"))
    assert who.can("Patient", "r") and who.can("Patient", "s") and not who.can("Patient", "u")
    assert who.can("Observation", "c") and not who.can("Observation", "r")
    assert not who.can("Encounter", "r")
    assert who.has("ingest:cht") and not who.has("ingest:commcare") and not who.has("admin")
    wildcard = Principal.of("ops", ("system/*.cruds", "ingest:*"))
    assert wildcard.can("Encounter", "d") and wildcard.has("ingest:anything")


@pytest.mark.parametrize("bad", [[], ["system/Nope.rs"], ["patient/*.rs"], ["ingest:has space"]])
def test_invalid_scope_lists(bad: list[str]) -> None:
    with pytest.raises(ScopeError):
        validate_scopes(bad)
