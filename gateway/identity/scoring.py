"""Pair scoring: deterministic rules first, then the Fellegi–Sunter weight of the field levels.

A comparison puts each field of a pair in one of its levels (``rules.FIELD_LEVELS``);
the pair's score is the sum of the levels' weights ``log2(m/u)`` (0 for a field missing on
either side). Names are compared with Jaro–Winkler on folded names, given and family both
ways round (given/family swaps are common in CHW registers), keeping the better order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from rapidfuzz.distance import JaroWinkler

from gateway.identity.normalise import Features
from gateway.identity.rules import Rules


class Grade(StrEnum):
    """The FHIR match-grade of a pair (http://hl7.org/fhir/StructureDefinition/match-grade)."""

    CERTAIN = "certain"  # auto-linked
    PROBABLE = "probable"  # a review task
    POSSIBLE = "possible"  # below review, above zero weight
    CERTAINLY_NOT = "certainly-not"


@dataclass(frozen=True, slots=True)
class Comparison:
    """The outcome of comparing two records, with the evidence per field."""

    score: float
    grade: Grade
    levels: dict[str, str | None]
    rule: str | None = None  # the deterministic rule that decided, if any


def _name_level(sim: float, rules: Rules) -> str:
    if sim >= 0.999:
        return "exact"
    if sim >= rules.similarity.get("close", 0.94):
        return "close"
    if sim >= rules.similarity.get("similar", 0.85):
        return "similar"
    return "different"


def _names(a: Features, b: Features) -> tuple[float | None, float | None]:
    """Jaro–Winkler of given and of family names, in the better of the two orders."""
    if not (a.given or a.family) or not (b.given or b.family):
        return None, None

    def sim(x: str, y: str) -> float | None:
        return JaroWinkler.similarity(x, y) if x and y else None

    straight = (sim(a.given, b.given), sim(a.family, b.family))
    swapped = (sim(a.given, b.family), sim(a.family, b.given))
    total = sum(v or 0.0 for v in straight), sum(v or 0.0 for v in swapped)
    return swapped if total[1] > total[0] + 0.05 else straight


def _birth_level(a: Features, b: Features) -> str | None:
    if a.birth is None or b.birth is None:
        return None
    x, y = a.birth, b.birth
    if x == y:
        return "exact"
    if x.year == y.year and x.month == y.day and x.day == y.month:
        return "day_month_swapped"
    if abs(x.year - y.year) == 1 and x.month == y.month and x.day == y.day:
        return "year_off_by_one"
    if (a.birth_estimated or b.birth_estimated) and abs(_years(x, y)) <= 2:
        return "estimated_near"
    return "different"


def _years(x: date, y: date) -> float:
    return (x - y).days / 365.25


def _same(x: object, y: object) -> str | None:
    if x is None or y is None:
        return None
    return "same" if x == y else "different"


def _sets(x: frozenset[str], y: frozenset[str]) -> str | None:
    if not x or not y:
        return None
    return "same" if x & y else "different"


def compare(a: Features, b: Features, rules: Rules) -> Comparison:
    """Compare two records and grade the pair."""
    given_sim, family_sim = _names(a, b)
    levels: dict[str, str | None] = {
        "given": None if given_sim is None else _name_level(given_sim, rules),
        "family": None if family_sim is None else _name_level(family_sim, rules),
        "birthdate": _birth_level(a, b),
        "sex": _same(a.sex, b.sex),
        "location": _same(a.location, b.location),
        "phone": _sets(a.phones, b.phones),
    }
    table = rules.weight_table()
    score = 0.0
    for name, level in levels.items():
        if level is not None:
            score += table.get((name, level), 0.0)
    systems_a = {s for s, _ in a.national_ids}
    shared_systems = systems_a & {s for s, _ in b.national_ids}
    if shared_systems:
        if a.national_ids & b.national_ids:
            levels["national_id"] = "same"
        else:
            # Two different national ids of one system are two people, whatever else agrees.
            return Comparison(score, Grade.CERTAINLY_NOT, {**levels, "national_id": "different"})
    for rule in rules.deterministic:
        if all(_agrees(levels, name) for name in rule.agree) and not any(
            levels.get(name) == "different" for name in rule.unless_different
        ):
            return Comparison(score, Grade.CERTAIN, levels, rule.name)
    if score >= rules.thresholds.link and not any(
        levels.get(name) == "different" for name in rules.never_link_when_different
    ):
        grade = Grade.CERTAIN
    elif score >= rules.thresholds.review:
        grade = Grade.PROBABLE
    elif score > 0:
        grade = Grade.POSSIBLE
    else:
        grade = Grade.CERTAINLY_NOT
    return Comparison(score, grade, levels)


def _agrees(levels: dict[str, str | None], name: str) -> bool:
    return levels.get(name) in ("same", "exact")
