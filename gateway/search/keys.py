"""Index keys of bounded size: what the index tables store for a value, and searches compare with.

PostgreSQL refuses a B-tree entry larger than about 2.7 KB (a third of a page), and every
text column of ``idx_token``, ``idx_string`` and ``idx_ref`` that a search compares is in
one. Values come from clients, so a long one (a note in a string parameter, a pasted blob
in an identifier or a reference) made the write fail on PostgreSQL alone. Each such column
keeps at most ``MAX_KEY_BYTES`` of UTF-8, so an entry (two of them with the type and
parameter names) stays well under the limit on both backends:

* ``token_key`` (token system and code, reference target type and id): a longer value is
  its start and a SHA-256 of the whole, so equal keys still mean equal values and a search
  for the whole value finds exactly the resources that have it;
* ``string_key`` (the normalised string): its first ``MAX_KEY_BYTES``, whole characters, so
  prefix searches (the default for strings) still work, ``:exact`` compares the unbounded
  ``exact`` column, and ``:contains`` sees the start of a longer value only.

Both are idempotent, and the identity for any value up to ``MAX_KEY_BYTES``.
"""

from __future__ import annotations

import hashlib

__all__ = ["MAX_KEY_BYTES", "string_key", "token_key"]

#: UTF-8 bytes an index key holds at most.
MAX_KEY_BYTES = 1000
#: Characters that take at most MAX_KEY_BYTES in any case (4 bytes each): no encoding needed.
_SURELY_SHORT = MAX_KEY_BYTES // 4
_HASH_MARK = "#sha256:"
#: Bytes of the value kept in front of its hash (the key: this, the mark and 64 hex digits).
_HEAD_BYTES = MAX_KEY_BYTES - len(_HASH_MARK) - 64 - 8


def token_key(value: str | None) -> str | None:
    """``value`` as the index keeps a token's system or code (None stays None)."""
    if value is None or len(value) <= _SURELY_SHORT:
        return value
    raw = value.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_KEY_BYTES:
        return value
    head = raw[:_HEAD_BYTES].decode("utf-8", "ignore")
    return f"{head}{_HASH_MARK}{hashlib.sha256(raw).hexdigest()}"


def string_key(norm: str) -> str:
    """A normalised string as the index keeps it: its first MAX_KEY_BYTES of UTF-8, whole characters."""
    if len(norm) <= _SURELY_SHORT:
        return norm
    raw = norm.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_KEY_BYTES:
        return norm
    return raw[:MAX_KEY_BYTES].decode("utf-8", "ignore")
