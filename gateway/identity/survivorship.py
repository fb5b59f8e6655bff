"""Survivorship: which member record's value each element of a golden Patient takes.

The rule file's ``survivorship`` section names a strategy per element:

* ``most_recent``: the value of the member updated last (``meta.lastUpdated``) that has one;
* ``most_frequent``: the value most members agree on (ties: the most recent of them);
* ``source_priority``: the value of the member whose source (``meta.source``) comes first in
  ``source_priority`` (ties and unlisted sources: the most recent);
* ``non_estimated``: for ``birthDate``, a full date not flagged estimated beats an estimated one
  (then the most recent);
* ``union``: every member's entries, de-duplicated (identifiers by system and value, telecom by
  system and digits, others by their JSON), in member order.

Members are always taken in a fixed order (most recent first, then id), so the same members
give the same golden record whatever order they were read in.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from gateway import jsonio
from gateway.identity.normalise import ESTIMATED_BIRTHDATE
from gateway.identity.survivorship_rules import Survivorship
from gateway.store import is_kept_identifier

_LISTS = frozenset({"name", "identifier", "telecom", "address", "communication"})
_DIGITS = re.compile(r"\D+")

JsonObject = dict[str, Any]


def ordered(members: Sequence[JsonObject]) -> list[JsonObject]:
    """Members most recently updated first (then by id), the order every strategy starts from."""
    by_id = sorted(members, key=lambda m: str(m.get("id", "")))
    return sorted(by_id, key=lambda m: str((m.get("meta") or {}).get("lastUpdated", "")), reverse=True)


def survive(members: Sequence[JsonObject], rules: Survivorship, phone_digits: int = 8) -> JsonObject:
    """The golden record's elements from its members (only the elements some member has); telecom
    entries are one when their last ``phone_digits`` digits are (country codes are written or not)."""
    order = ordered(members)
    golden: JsonObject = {}
    for element, strategy in rules.elements.items():
        having = [m for m in order if _present(m.get(element))]
        if not having:
            continue
        if strategy == "union":
            golden[element] = _union(element, having, phone_digits)
            continue
        chosen = _CHOOSERS[strategy](element, having, rules)
        golden[element] = chosen[element]
        if element == "birthDate" and isinstance(chosen.get("_birthDate"), dict):
            golden["_birthDate"] = chosen["_birthDate"]
    return golden


def _present(value: Any) -> bool:
    return value is not None and value != [] and value != {}


def _most_recent(element: str, having: list[JsonObject], rules: Survivorship) -> JsonObject:
    return having[0]


def _most_frequent(element: str, having: list[JsonObject], rules: Survivorship) -> JsonObject:
    counts = Counter(_key(m[element]) for m in having)
    best = max(counts.values())
    return next(m for m in having if counts[_key(m[element])] == best)


def _source_priority(element: str, having: list[JsonObject], rules: Survivorship) -> JsonObject:
    def rank(member: JsonObject) -> int:
        source = str((member.get("meta") or {}).get("source", ""))
        ranks = (i for i, prefix in enumerate(rules.source_priority) if source.startswith(prefix))
        return next(ranks, len(rules.source_priority))

    return min(having, key=rank)  # min keeps the first (most recent) of equal rank


def _non_estimated(element: str, having: list[JsonObject], rules: Survivorship) -> JsonObject:
    def estimated(member: JsonObject) -> bool:
        value = str(member.get(element, ""))
        flags = (member.get(f"_{element}") or {}).get("extension") or []
        flagged = any(isinstance(e, dict) and e.get("url") == ESTIMATED_BIRTHDATE and e.get("valueBoolean")
                      for e in flags)  # fmt: skip
        return flagged or value.count("-") < 2

    return next((m for m in having if not estimated(m)), having[0])


_CHOOSERS: dict[str, Callable[[str, list[JsonObject], Survivorship], JsonObject]] = {
    "most_recent": _most_recent,
    "most_frequent": _most_frequent,
    "source_priority": _source_priority,
    "non_estimated": _non_estimated,
}


def _union(element: str, having: list[JsonObject], digits: int) -> Any:
    if element not in _LISTS:
        return having[0][element]  # a single value has nothing to unite: the most recent
    seen: set[str] = set()
    out: list[Any] = []
    for member in having:
        for item in member[element] if isinstance(member[element], list) else [member[element]]:
            if element == "identifier" and is_kept_identifier(item):
                continue  # a writer's identifier on one source record (a DHIS2 UID) is that record's own
            key = _entry_key(element, item, digits)
            if key not in seen:
                seen.add(key)
                out.append(item)
    return out


def _entry_key(element: str, item: Any, digits: int) -> str:
    if isinstance(item, dict) and element == "identifier":
        return f"{item.get('system')}|{item.get('value')}"
    if isinstance(item, dict) and element == "telecom":
        return f"{item.get('system')}|{_DIGITS.sub('', str(item.get('value', '')))[-digits:]}"
    return _key(item)


def _key(value: Any) -> str:
    return jsonio.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
