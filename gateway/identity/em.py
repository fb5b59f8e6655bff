"""Estimating the Fellegi–Sunter m/u probabilities from unlabelled records (EM), as splink does.

* u (level probabilities among different people) from random pairs of records: nearly all
  random pairs are two people, so the share of each level among them is u.
* m (among the same person) by EM over blocked pairs, in two sessions, each leaving out the
  fields its blocking makes agree for reasons other than identity: pairs sharing a **name**
  key estimate m of birth date, sex, location and phone; pairs sharing a **phone** estimate m
  of the names, birth date and sex (a household shares its phone and its place, so those two
  would make every household a "match"). A field estimated in both takes the mean.

EM, with u fixed: E: for each pattern of levels, g = λ·Πm / (λ·Πm + (1-λ)·Πu), the chance
the pair is one person; M: m(field, level) = Σ g over pairs at that level / Σ g over pairs
where the field is present (a pseudo-count keeps every level above 0), λ the mean of g. A
field missing on either side adds no factor, as in scoring. Identical patterns are counted
once, so an iteration costs the distinct patterns, not the pairs. The rule file's m is the start.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.identity.blocking import blocking_keys
from gateway.identity.normalise import Features
from gateway.identity.rules import FIELD_LEVELS, Rules
from gateway.identity.scoring import compare

FIELDS = tuple(FIELD_LEVELS)
Pattern = tuple[str | None, ...]  # one level (or None: missing) per field of ``FIELDS``
Table = dict[str, dict[str, float]]  # field -> level -> probability
_PSEUDO = 0.5  # pseudo-count per level: keeps a level never seen among matches above zero
#: (blocking key prefixes, fields whose m the session estimates)
SESSIONS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("y", "n:"), ("birthdate", "sex", "location", "phone")),
    (("p:",), ("given", "family", "birthdate", "sex")),
)


@dataclass(frozen=True, slots=True)
class Estimate:
    """EM's answer: m and u per field level, and how it got there."""

    m: Table
    u: Table
    random_pairs: int
    blocked_pairs: int  # over both sessions
    iterations: int  # the longer session's
    converged: bool


def u_from_random_pairs(records: Sequence[Features], rules: Rules, pairs: int, seed: int = 17) -> Table:
    """u of every field level: the level shares among ``pairs`` random pairs of records."""
    rng = random.Random(seed)
    counts = {name: dict.fromkeys(FIELD_LEVELS[name], _PSEUDO) for name in FIELDS}
    for _ in range(pairs if len(records) > 1 else 0):
        a, b = rng.sample(range(len(records)), 2)
        for name, level in compare(records[a], records[b], rules).levels.items():
            if level is not None and name in counts:
                counts[name][level] += 1
    return _normalised(counts)


def blocked_patterns(records: Sequence[Features], rules: Rules, prefixes: tuple[str, ...]) -> Counter[Pattern]:
    """The level patterns of every pair sharing a blocking key starting with one of ``prefixes``, counted."""
    blocks: defaultdict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(records):
        for key in blocking_keys(f):
            if key.startswith(prefixes):
                blocks[key].append(i)
    seen: set[tuple[int, int]] = set()
    patterns: Counter[Pattern] = Counter()
    for members in blocks.values():
        if len(members) > rules.max_block_size:
            continue  # skipped by the matcher too
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                pair = (members[x], members[y])
                if pair in seen:
                    continue
                seen.add(pair)
                levels = compare(records[pair[0]], records[pair[1]], rules).levels
                patterns[tuple(levels.get(name) for name in FIELDS)] += 1
    return patterns


def em_m(
    patterns: Mapping[Pattern, int], fields: Sequence[str], m: Table, u: Table,
    *, iterations: int = 200, tolerance: float = 1e-6,
) -> tuple[Table, int, bool]:
    """EM for m of ``fields`` over ``patterns`` (the other fields are left out of the model); u is
    estimated alongside, as the blocked non-matches' level shares differ from random pairs'.
    Only the fields some pair has come back."""
    used = [(FIELDS.index(name), name) for name in fields]
    m = {name: dict(m[name]) for name in fields}
    u = {name: dict(u[name]) for name in fields}
    share, total = 0.1, sum(patterns.values())
    items = list(patterns.items())
    if not total:
        return {}, 0, True
    for done in range(1, iterations + 1):
        counts = {name: dict.fromkeys(FIELD_LEVELS[name], _PSEUDO) for name in fields}
        others = {name: dict.fromkeys(FIELD_LEVELS[name], _PSEUDO) for name in fields}
        matched = 0.0
        for pattern, count in items:
            pm, pu = share, 1.0 - share
            for i, name in used:
                level = pattern[i]
                if level is not None:
                    pm *= m[name][level]
                    pu *= u[name][level]
            g = pm / (pm + pu) if pm + pu > 0 else 0.0
            matched += g * count
            for i, name in used:
                level = pattern[i]
                if level is not None:
                    counts[name][level] += g * count
                    others[name][level] += (1.0 - g) * count
        new, u = _normalised(counts), _normalised(others)
        new_share = min(max(matched / total, 1e-6), 1 - 1e-6)
        moved = max([abs(new_share - share)] + [abs(new[f][lvl] - m[f][lvl]) for f in fields for lvl in m[f]])
        m, share = new, new_share
        if moved < tolerance:
            return _observed(m, patterns, used), done, True
    return _observed(m, patterns, used), iterations, False


def _observed(m: Table, patterns: Mapping[Pattern, int], used: Sequence[tuple[int, str]]) -> Table:
    """The fields of ``m`` present in some pair (EM learnt nothing about the others: their m is the pseudo-count's)."""
    return {name: m[name] for i, name in used if any(pattern[i] is not None for pattern in patterns)}


def estimate(records: Sequence[Features], start: Rules, *, random_pairs: int = 200_000,
             iterations: int = 200, seed: int = 17) -> Estimate:
    """m by EM over blocked pairs (two sessions), u from random pairs, starting from ``start``'s m."""
    levels = start.levels()
    u = u_from_random_pairs(records, start, random_pairs, seed)
    m0 = _normalised({name: {lvl: levels[name][lvl].m if name in levels else 1.0 for lvl in FIELD_LEVELS[name]}
                      for name in FIELDS})
    found: defaultdict[str, list[dict[str, float]]] = defaultdict(list)
    blocked, longest, converged = 0, 0, True
    for prefixes, fields in SESSIONS:
        patterns = blocked_patterns(records, start, prefixes)
        blocked += sum(patterns.values())
        m, done, ok = em_m(patterns, fields, m0, u, iterations=iterations)
        longest, converged = max(longest, done), converged and ok
        for name, table in m.items():
            found[name].append(table)
    m_final = {name: ({lvl: sum(t[lvl] for t in found[name]) / len(found[name]) for lvl in FIELD_LEVELS[name]}
                      if found[name] else m0[name]) for name in FIELDS}
    return Estimate(m_final, u, random_pairs, blocked, longest, converged)


def _normalised(table: Mapping[str, Mapping[str, float]]) -> Table:
    return {name: {lvl: value / sum(levels.values()) for lvl, value in levels.items()}
            for name, levels in table.items()}


def _section(found: Estimate) -> dict[str, dict[str, dict[str, float]]]:
    return {name: {lvl: {"m": round(max(found.m[name][lvl], 1e-6), 6), "u": round(max(found.u[name][lvl], 1e-6), 6)}
                   for lvl in FIELD_LEVELS[name]} for name in FIELDS}


def estimated_rules(rules: Rules, found: Estimate) -> Rules:
    """``rules`` using ``found``'s m/u (``model: estimated``)."""
    return Rules.model_validate({**rules.model_dump(by_alias=True), "model": "estimated", "estimated": _section(found)})


def estimated_yaml(found: Estimate) -> str:
    """The ``estimated:`` section of a rule file holding ``found``'s m/u."""
    lines = [
        f"# m/u estimated by EM (gateway identity estimate): u from {found.random_pairs} random pairs,",
        f"# m from {found.blocked_pairs} blocked pairs in {found.iterations} iterations"
        f"{'' if found.converged else ' (not converged)'}. Used when model: estimated.",
        "estimated:",
    ]
    for name, levels in _section(found).items():
        lines.append(f"  {name}:")
        lines.extend(f"    {lvl}: {{m: {mu['m']}, u: {mu['u']}}}" for lvl, mu in levels.items())
    return "\n".join(lines) + "\n"
