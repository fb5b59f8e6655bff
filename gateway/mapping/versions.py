"""Record versions: what a mapping's ``modified`` reads, as one number that grows with each edit.

Sources re-send records (a retry after a timeout, a repeater replaying its queue, a backfill
of an old export), and not always in order: a version that reaches the gateway after a
later one must not be stored over it. A mapping names where its records say which version
they are; this module turns that value into a number the store compares:

* a number (epoch milliseconds such as CHT's ``reported_date``, a counter) is itself;
* a date or date-time (CommCare's ``server_date_modified``, ODK Central's
  ``__system.updatedAt``; a time without an offset is read as UTC) is its epoch seconds;
* a CouchDB revision ``N-<hash>`` (CHT's ``_rev``) is ``N``, which grows with every edit;
* a string of digits is that number.

Only values of one field are ever compared with each other, so their units need not agree
with another mapping's.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from gateway.mapping.errors import MappingError
from gateway.mapping.values import epoch_seconds

__all__ = ["version_number"]

_REVISION = re.compile(r"(\d+)-\S+")  # CouchDB: N-<md5 hex>; tests and tools write others
_NUMBER = re.compile(r"\d+(\.\d+)?")


def version_number(values: list[Any], path: str) -> float | None:
    """The version ``values`` (what ``modified`` evaluated to) stand for; None when the record
    has none (it is then stored whatever is stored). Raises ``MappingError`` naming ``path``
    for a value that is no version."""
    if not values:
        return None
    if len(values) > 1:
        raise MappingError(path, f"the record's version has {len(values)} values; expected one", code="value")
    value = values[0]
    if isinstance(value, bool):
        raise MappingError(
            path, "the record's version is a boolean, not a number, a date/time or a revision", code="value"
        )
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        value = value.isoformat()
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return float(text)
        try:
            return epoch_seconds(text, path)
        except MappingError:
            pass
        revision = _REVISION.fullmatch(text)
        if revision:
            return float(revision.group(1))
    raise MappingError(path, "the record's version is not a number, a date/time or a revision 'N-…'", code="value")
