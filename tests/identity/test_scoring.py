"""Pair scoring: folding, name swaps, birth-date levels, deterministic rules and guards."""

from __future__ import annotations

import math
from typing import Any

import pytest

from gateway.identity import Grade, compare, features, fold, load_rules
from tests.ingest.conftest import MAPPINGS

RULES = load_rules(MAPPINGS / "identity" / "rules.yaml")


def _patient(pid: str, given: str, family: str, birth: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "id": pid, "name": [{"given": given.split(), "family": family}]}
    if birth is not None:
        body["birthDate"] = birth
    return {**body, **extra}


def _compare(a: dict[str, Any], b: dict[str, Any]) -> Any:
    return compare(features(a, RULES), features(b, RULES), RULES)


def test_accents_hyphens_and_spelling_variants_fold_alike() -> None:
    assert fold("Jean-Baptiste", RULES) == fold("jan baptiste", RULES)
    assert fold("Ndayishimiye", RULES) == fold("Ndayisimiye", RULES)
    assert fold("Uwimana", RULES) == fold("Uwimana", RULES) != fold("Mukamana", RULES)
    assert fold("Clément", RULES) == fold("Krement", RULES)  # Kinyarwanda: one liquid, written l or r


def test_swapped_given_and_family_names_still_match() -> None:
    result = _compare(_patient("a", "Eric", "Habimana", "1988-05-02", gender="male"),
                      _patient("b", "Habimana", "Eric", "1988-05-02", gender="male"))
    assert result.levels["given"] == "exact" and result.levels["family"] == "exact"
    assert result.grade is Grade.CERTAIN


def test_birth_date_levels() -> None:
    base = _patient("a", "Marie", "Joseph", "1990-03-04")
    levels = {birth: _compare(base, _patient("b", "Marie", "Joseph", birth)).levels["birthdate"]
              for birth in ("1990-03-04", "1990-04-03", "1991-03-04", "1990", "1975-01-01")}
    assert levels == {"1990-03-04": "exact", "1990-04-03": "day_month_swapped", "1991-03-04": "year_off_by_one",
                      "1990": "estimated_near", "1975-01-01": "different"}


def test_twins_agreeing_on_all_but_the_given_name_are_never_linked() -> None:
    shared = {"gender": "female", "telecom": [{"system": "phone", "value": "+250788111222"}]}
    result = _compare(_patient("a", "Aline", "Uwase", "2015-06-01", **shared),
                      _patient("b", "Diane", "Uwase", "2015-06-01", **shared))
    assert result.levels["given"] == "different"
    assert result.score >= RULES.thresholds.review and result.grade is Grade.PROBABLE
    assert result.rule is None  # same phone and birth date, but the names differ: the rule does not apply


def test_national_ids_decide_both_ways() -> None:
    system = RULES.national_id_systems[0]
    same = _compare(_patient("a", "Paul", "Kagame", None, identifier=[{"system": system, "value": "119"}]),
                    _patient("b", "Pol", "Kagabo", "1950", identifier=[{"system": system, "value": "119"}]))
    assert same.grade is Grade.CERTAIN and same.rule == "same-national-id"
    other = _compare(_patient("a", "Paul", "Kagame", "1957-10-23", identifier=[{"system": system, "value": "1"}]),
                     _patient("b", "Paul", "Kagame", "1957-10-23", identifier=[{"system": system, "value": "2"}]))
    assert other.grade is Grade.CERTAINLY_NOT


def test_a_common_name_weighs_less_than_a_rare_one() -> None:
    a = features(_patient("a", "Marie", "Joseph", "1990-03-04", gender="female"), RULES)
    b = features(_patient("b", "Marie", "Joseph", "1990-03-04", gender="female"), RULES)
    plain = compare(a, b, RULES)
    rare = compare(a, b, RULES, lambda field, value: 0.0001)
    common_given = compare(a, b, RULES, lambda field, value: 0.2 if field == "given" else 0.0001)
    both = compare(a, b, RULES, lambda field, value: 0.2)
    assert plain.grade is Grade.CERTAIN and rare.score == plain.score  # rarer than u: no change
    # "Marie" held by a fifth of the register: u raised from the file's 0.005 to 0.2, log2(40) less.
    given_u, family_u = RULES.fields["given"]["exact"].u, RULES.fields["family"]["exact"].u
    assert common_given.score == pytest.approx(plain.score - math.log2(0.2 / given_u))
    assert both.score == pytest.approx(plain.score - math.log2(0.2 / given_u) - math.log2(0.2 / family_u))
    assert both.grade is Grade.PROBABLE  # a common name and a birth date alone do not link
