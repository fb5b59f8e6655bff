"""Pair scoring: deterministic rules first, then the Fellegi–Sunter weight of the field levels.

A comparison puts each field of a pair in one of its levels (``rules.FIELD_LEVELS``);
the pair's score is the sum of the levels' weights ``log2(m/u)`` (0 for a field missing on
either side). Names are compared with Jaro–Winkler on folded names, given and family both
ways round (given/family swaps are common in CHW registers), keeping the better order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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


def _names(a: Features, b: Features) -> tuple[float | None, float | None, bool]:
    """Jaro–Winkler of given and of family names, in the better of the two orders (and whether swapped)."""
    ag, af, bg, bf = a.given, a.family, b.given, b.family
    if not (ag or af) or not (bg or bf):
        return None, None, False
    jw = JaroWinkler.similarity  # inlined: this runs for every candidate pair
    given = jw(ag, bg) if ag and bg else None
    family = jw(af, bf) if af and bf else None
    given_swapped = jw(ag, bf) if ag and bf else None
    family_swapped = jw(af, bg) if af and bg else None
    if (given_swapped or 0.0) + (family_swapped or 0.0) > (given or 0.0) + (family or 0.0) + 0.05:
        return given_swapped, family_swapped, True
    return given, family, False


def _other_names(x: str, y: str, similar: float) -> bool:
    """Whether two compound given names share a name and each has another the other lacks.

    Twins are often named alike: "Jean Paul" and "Jean Pierre" (Jaro-Winkler 0.87 folded),
    "Marie Claire" and "Marie Rose" (0.89) compare as one "similar" given name, but "Paul" is
    not "Pierre" typed again. One record leaving out a middle name ("Jean" and "Jean Paul"),
    or a typo in one part, is not this.
    """
    xs, ys = x.split(), y.split()
    if len(xs) < 2 or len(ys) < 2 or not set(xs) & set(ys):
        return False
    jw = JaroWinkler.similarity

    def lone(tokens: list[str], others: list[str]) -> bool:
        return any(all(jw(t, o) < similar for o in others) for t in tokens if t not in others)

    return lone(xs, ys) and lone(ys, xs)


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


class _Compiled:
    """What scoring reads of a rule file, as plain attributes: pydantic attribute access (private
    ones above all) costs microseconds, and scoring runs for every candidate pair."""

    __slots__ = ("close", "deterministic", "exact_u", "link", "never", "review", "rules", "similar", "weights")

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.weights = dict(rules.weight_table())
        self.close = rules.similarity.get("close", 0.94)
        self.similar = rules.similarity.get("similar", 0.85)
        self.link, self.review = rules.thresholds.link, rules.thresholds.review
        self.deterministic = tuple((r.name, tuple(r.agree), tuple(r.unless_different)) for r in rules.deterministic)
        self.never = tuple(rules.never_link_when_different)
        levels = rules.levels()
        self.exact_u: dict[str, float] = {
            name: levels[name]["exact"].u for name in ("given", "family") if name in levels
        }

    def level(self, sim: float) -> str:
        if sim >= 0.999:
            return "exact"
        if sim >= self.close:
            return "close"
        return "similar" if sim >= self.similar else "different"


_COMPILED: dict[int, _Compiled] = {}


def _compiled(rules: Rules) -> _Compiled:
    found = _COMPILED.get(id(rules))
    if found is None or found.rules is not rules:
        if len(_COMPILED) > 32:
            _COMPILED.clear()  # rule files are few; a process that made many starts over
        found = _COMPILED[id(rules)] = _Compiled(rules)
    return found


#: The share of records holding a name (``"given"``/``"family"``, folded value), for term-frequency adjustment.
NameShare = Callable[[str, str], float]


def compare(a: Features, b: Features, rules: Rules, share: NameShare | None = None) -> Comparison:
    """Compare two records and grade the pair.

    With ``share``, an exact name agreement weighs less when the name is common: two records
    agreeing on a name half the register holds is weaker evidence than the rule file's u
    assumes (term-frequency adjustment, as splink does): u is raised to the name's share.
    """
    c = _compiled(rules)
    given_sim, family_sim, swapped = _names(a, b)
    given_level = None if given_sim is None else c.level(given_sim)
    if given_level in ("similar", "close") and _other_names(a.given, b.family if swapped else b.given, c.similar):
        given_level = "different"  # twins named alike: another person, whatever the spelling distance
    levels: dict[str, str | None] = {
        "given": given_level,
        "family": None if family_sim is None else c.level(family_sim),
        "birthdate": _birth_level(a, b),
        "sex": _same(a.sex, b.sex),
        "location": _same(a.location, b.location),
        "phone": _sets(a.phones, b.phones),
    }
    weights = c.weights
    score = 0.0
    for name, level in levels.items():
        if level is not None:
            score += weights.get((name, level), 0.0)
    if share is not None:
        for name, value in (("given", a.given), ("family", a.family)):
            if levels[name] == "exact" and value:
                common = share(name, value)
                u = c.exact_u.get(name, 1.0)
                if common > u:
                    score -= math.log2(common / u)
    if a.national_ids and b.national_ids and {s for s, _ in a.national_ids} & {s for s, _ in b.national_ids}:
        if a.national_ids & b.national_ids:
            levels["national_id"] = "same"
        else:
            # Two different national ids of one system are two people, whatever else agrees.
            return Comparison(score, Grade.CERTAINLY_NOT, {**levels, "national_id": "different"})
    guarded = levels
    parts_a, parts_b = (bool(a.given), bool(a.family)), (bool(b.given), bool(b.family))
    if parts_a != parts_b or not (a.given and b.given):
        # A record that names fewer parts than the other, or no given name, or no name at all (a
        # newborn registered by surname only, as "Baby Nakato", or by a birth form without a name,
        # beside "Aisha Nakato" or another such newborn of the household): the rest may agree, the
        # given name is unknown, so it may be the child named since or their twin. The guards do
        # not count it as agreeing.
        guarded = {**levels, "given": "different"}
    for name, agree, unless in c.deterministic:
        if all(levels.get(field) in ("same", "exact") for field in agree) and not any(
            guarded.get(field) == "different" for field in unless
        ):
            return Comparison(score, Grade.CERTAIN, levels, name)
    if score >= c.link and not any(guarded.get(field) == "different" for field in c.never):
        grade = Grade.CERTAIN
    elif score >= c.review:
        grade = Grade.PROBABLE
    elif score > 0:
        grade = Grade.POSSIBLE
    else:
        grade = Grade.CERTAINLY_NOT
    return Comparison(score, grade, levels)
