"""History's ``_at`` as SQL conditions: the versions current at some point of given periods.

A version is current from its lastUpdated until the next version's (http.html#history: "resource
versions that were current at some point during the time period"); the latest version, a
tombstone too, is current from its lastUpdated on. Its lifetime ``[L, N)`` overlaps a period
``[lo, hi)`` when ``L < hi`` and ``N > lo``. lastUpdated is stored to the millisecond, so the
bounds are taken to whole milliseconds (``L < ceil(hi)``, ``N > floor(lo)``: the same test for
whole-millisecond ``L`` and ``N``) and compared half a millisecond off, clear of float rounding.

The current versions are the ``resources`` rows, the superseded ones the ``history`` rows; the
next version of a superseded one is ``version + 1``, in ``history`` or ``resources``, found by
their primary and unique keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_HALF_MS = 0.0005

#: The lastUpdated of the version after ``r`` (a ``history`` row): NULL if there is none.
NEXT_LU = ("COALESCE("
           "(SELECT n.lu FROM history n WHERE n.rtype = r.rtype AND n.id = r.id AND n.version = r.version + 1),"
           " (SELECT n.lu FROM resources n WHERE n.rtype = r.rtype AND n.id = r.id AND n.version = r.version + 1))")


def _ms(when: datetime, *, ceiling: bool = False) -> int:
    """``when`` in whole milliseconds since the epoch (rounded down, or up with ``ceiling``)."""
    return -((_EPOCH - when) // _MS) if ceiling else (when - _EPOCH) // _MS


def at_conditions(
    periods: Sequence[tuple[datetime, datetime]], until: datetime | None
) -> tuple[tuple[str, list[float]], tuple[str, list[float]]]:
    """Conditions (with their parameters) on current rows ``r`` and on superseded rows ``r``: the
    version was current at some point of one of ``periods`` (each ``[lo, hi)``). With ``until``
    (history's page snapshot), a next version after it is not there yet: its predecessor is still
    current, so versions written between pages move nothing."""
    assert periods, "no period: no condition"
    bounds = [(_ms(lo), _ms(hi, ceiling=True)) for lo, hi in periods]
    end = max(hi for _, hi in bounds)
    # A current version is current from its lastUpdated on: any period it started before will do.
    current = ("r.lu < ?", [end / 1000 - _HALF_MS])
    shown_until = None if until is None else _ms(until)
    ended: list[str] = []
    params: list[float] = [end / 1000 - _HALF_MS]
    for lo, hi in bounds:
        after = lo if shown_until is None else min(lo, shown_until)
        ended.append(f"(r.lu < ? AND {NEXT_LU} > ?)")
        params += [hi / 1000 - _HALF_MS, after / 1000 + _HALF_MS]
    # The bound on r.lu alone first: the (rtype, lu) and (lu) indexes narrow the rows to look up.
    return current, (f"r.lu < ? AND ({' OR '.join(ended)})", params)
