"""Merging what a source record makes into the stored version of a resource others make too.

A person, a household or a pregnancy is written by several forms: the registration knows
the name, a follow-up visit only the id and a phone number. A mapping rule with
``on_update: merge`` has its resource keep the stored version's elements it leaves out,
instead of replacing the resource whole (the default): a follow-up that makes a Patient
without a name leaves the stored name as it is.

The unit is the top-level element: one the record makes replaces the stored one whole (a
list is replaced, not appended to), one it leaves out is kept. A choice element the record
makes (``deceasedBoolean``) removes the stored one of another type (``deceasedDateTime``),
and a primitive it makes drops the stored primitive's ``_x`` (its extensions were about the
old value). The stored narrative is dropped unless the record makes one: it described the
old content.
"""

from __future__ import annotations

from typing import Any

from gateway.fhir.strict import StrictChecker, default_checker

__all__ = ["merged_elements"]

#: Elements a merge always takes from what the record made (or leaves out with it).
_FROM_RECORD = ("resourceType", "id", "meta", "text")


def merged_elements(
    stored: dict[str, Any], made: dict[str, Any], checker: StrictChecker | None = None
) -> dict[str, Any]:
    """``made`` with the top-level elements of ``stored`` it leaves out (see the module docstring)."""
    ctype = (checker or default_checker()).resource_type(made.get("resourceType"))

    def element(key: str) -> str:  # the choice element of a typed name (deceasedBoolean: deceased)
        return (ctype.choice_of(key) if ctype is not None else None) or key

    taken = {element(key) for key in made}
    out = dict(made)
    for key, value in stored.items():
        if key in out or key in _FROM_RECORD:
            continue
        if key.startswith("_") and key[1:] in made:
            continue  # the extensions of a primitive the record replaced
        if element(key.removeprefix("_")) in taken:
            continue  # another type of a choice element the record set
        out[key] = value
    return out
