"""Where a date sort's walk may start and stop: the window of sort keys a query's matches can have.

A resource sorted newest first by a date parameter sorts by ``K``, the highest ``hi`` of its
index rows for that parameter; call ``m`` the lowest ``lo``. A criterion on the same parameter
bounds ``K`` from below (``gt``: some row ends after the value) or from above through ``m``
(``le``: some row starts before the value, so ``m`` does and ``K`` is at most ``m`` plus the
resource's spread). The store records, per type and parameter, the widest
spread ``W`` any resource has ever had (never lowered: a bound only has to be safe), leaving
out resources with an open end, whose ``K`` is the far future: a walk reads those first.

So a walk newest first over ``Encounter?date=ge2024-03-01&date=lt2024-04-01`` starts at
1 April plus ``W`` (a second for point-in-time encounters) instead of the newest row of the
store and, past 1 March minus ``W``, has seen every match: it costs the window's rows, not
the store's.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.search.dates import FAR_FUTURE
from gateway.search.query import Criterion, DateValue, SearchQuery

#: (lower, upper) or None for unbounded sides: a match's K lies in [lower - W, upper + W]
Window = tuple[float | None, float | None]

#: widest spread of one resource's rows of one date parameter: (param, spread) per parameter
Spreads = dict[str, float]


def spreads(rows: Iterable[tuple[str, float, float]]) -> Spreads:
    """Per date parameter of one resource: ``max(K - m, lo - hi of any row)``, the spread its
    rows force on the type's ``W``; parameters with an open end (``K`` far future) are left out."""
    found: dict[str, list[float]] = {}
    for param, lo, hi in rows:
        seen = found.get(param)
        if seen is None:
            found[param] = [lo, hi, lo - hi]
        else:
            if lo < seen[0]:
                seen[0] = lo
            if hi > seen[1]:
                seen[1] = hi
            if lo - hi > seen[2]:
                seen[2] = lo - hi
    return {param: max(k - m, inverted) for param, (m, k, inverted) in found.items() if k < FAR_FUTURE}


def sort_window(query: SearchQuery, param: str) -> Window | None:
    """The bounds the query's plain criteria on date parameter ``param`` put on a match's ``K``
    (see the module text), or None when none of them bounds it."""
    lower: float | None = None
    upper: float | None = None
    bounded = False
    for criterion in query.criteria:
        if criterion.param.code != param or not bounds_dates(criterion):
            continue
        c_lower, c_upper = _criterion_window(criterion)
        if c_lower is not None:
            lower = c_lower if lower is None else max(lower, c_lower)
            bounded = True
        if c_upper is not None:
            upper = c_upper if upper is None else min(upper, c_upper)
            bounded = True
    return (lower, upper) if bounded else None


def bounds_dates(c: Criterion) -> bool:
    """Whether ``c`` is plain date values (no modifier, ``:missing``, chain or ``_has``): the
    criteria that bound a window and that an index row of the parameter can test by itself."""
    plain = c.modifier is None and c.missing is None and c.chain is None and c.has is None and bool(c.values)
    return plain and all(isinstance(v, DateValue) for v in c.values)


def _criterion_window(c: Criterion) -> Window:
    # A criterion's values are ORed: the window is the hull of theirs, unbounded if one is.
    lowers: list[float | None] = []
    uppers: list[float | None] = []
    for value in c.values:
        assert isinstance(value, DateValue)  # ``bounds_dates`` chose the criterion
        lo, up = _value_window(value)
        lowers.append(lo)
        uppers.append(up)
    lower = None if any(v is None for v in lowers) else min(v for v in lowers if v is not None)
    upper = None if any(v is None for v in uppers) else max(v for v in uppers if v is not None)
    return lower, upper


def _value_window(v: DateValue) -> Window:
    # The row tests are those of ``gateway.search.sql._range_date``. A lower bound read off a
    # row's ``lo`` holds for K only up to W (a row may end before it starts in stored data that
    # skipped validation), so the walk widens both bounds by W.
    p = v.prefix
    if p == "eq":  # lo >= low and lo <= high and hi <= high
        return v.low, v.high
    if p == "gt":  # hi > high
        return v.high, None
    if p == "ge":  # hi > high or lo >= low
        return v.low, None
    if p == "sa":  # lo >= high
        return v.high, None
    if p == "lt":  # lo < low
        return None, v.low
    if p == "le":  # lo < low or hi <= high
        return None, v.high
    if p == "eb":  # hi <= low
        return None, v.low
    return None, None  # ne, ap: no bound
