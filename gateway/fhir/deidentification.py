"""De-identified copies of resources, for clients whose data policy says ``deidentify``.

A fixed recipe in the spirit of HIPAA Safe Harbor, kept simple enough for a data
protection officer to read here: every resource loses its narrative (``text``), business
identifiers (``identifier``, which hold national ids and phone-like numbers), free-text
notes (``note``, ``comment``) and the display text of references (often a name);
persons (Patient, RelatedPerson, Person, Practitioner) also lose names, contacts,
telecoms and photos, keep only the district, state and country of their addresses, and
keep only the year of dates of birth and death. Contained resources get the same. Ids
are the gateway's own (derived from source record keys), so references still join.
"""

from __future__ import annotations

from typing import Any

_EVERYWHERE = ("text", "identifier", "note", "comment")
_PERSONS = frozenset({"Patient", "RelatedPerson", "Person", "Practitioner"})
_PERSON_ELEMENTS = ("name", "telecom", "photo", "contact", "communication")
_ADDRESS_KEPT = ("use", "type", "district", "state", "country")
_YEAR_ONLY = ("birthDate", "deceasedDateTime")


def deidentify(resource: dict[str, Any]) -> dict[str, Any]:
    """A de-identified copy of ``resource`` (the argument is not changed)."""
    out: dict[str, Any] = {}
    person = resource.get("resourceType") in _PERSONS
    for key, value in resource.items():
        if key in _EVERYWHERE or (person and key in _PERSON_ELEMENTS):
            continue
        if key == "contained" and isinstance(value, list):
            out[key] = [deidentify(item) if isinstance(item, dict) else item for item in value]
        elif person and key == "address" and isinstance(value, list):
            kept = [{k: v for k, v in a.items() if k in _ADDRESS_KEPT} for a in value if isinstance(a, dict)]
            if any(kept):
                out[key] = [a for a in kept if a]
        elif person and key in _YEAR_ONLY and isinstance(value, str):
            out[key] = value[:4]
        else:
            out[key] = _scrub(value)
    return out


def _scrub(value: Any) -> Any:
    """Drop reference display texts and nested notes below the top level."""
    if isinstance(value, dict):
        reference = "reference" in value
        return {k: _scrub(v) for k, v in value.items()
                if not (reference and k == "display") and k not in ("note", "comment")}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value
