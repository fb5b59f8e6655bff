"""Blocking keys: a pair is scored only when the two records share at least one key.

Keys are phonetic codes of the names (Soundex, so one typo or a Creole/Kinyarwanda variant
left unfolded still often shares a key) with the birth year, the two names' codes together
in either order (a wrong year, swapped names), with and without the birth year, the phone's
last digits and every national id. Several passes, each cheap, together find nearly every
true pair while comparing a tiny share of all pairs.
"""

from __future__ import annotations

import jellyfish

from gateway.identity.normalise import Features


def _code(name: str) -> str:
    """The Soundex code of the first word (``""`` for no name)."""
    first = name.split(" ", 1)[0]
    return jellyfish.soundex(first) if first else ""


def blocking_keys(f: Features) -> set[str]:
    """The keys ``f`` is filed under."""
    keys: set[str] = set()
    given, family = _code(f.given), _code(f.family)
    if f.birth is not None:
        for code in (given, family):
            if code:
                keys.add(f"y{f.birth.year}:{code}")
    if given and family:
        both = ":".join(sorted((given, family)))
        keys.add("n:" + both)
        if f.birth is not None:
            # In a large register a common given name with a common family name is shared by
            # more than max_block_size people and its key is skipped; with the birth year it
            # still finds them.
            keys.add(f"yn{f.birth.year}:{both}")
    keys.update(f"p:{phone}" for phone in f.phones)
    keys.update(f"i:{system}|{value}" for system, value in f.national_ids)
    return keys
