"""What of a Patient the matcher compares, normalised: folded names, birth date, sex, place, phones, national ids.

Names are folded to lower-case ASCII letters (accents removed), then the rule file's
spelling variants are applied in order, so ``Ndayishimiye``/``Ndayisimiye`` or
``Jean-Baptiste``/``Jan Batis`` compare on what is pronounced rather than how it was typed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Any

from gateway.identity.rules import Rules

#: Extension the mappings set on a Patient: the Location of their household.
HOUSEHOLD_LOCATION = "urn:chw-gateway:extension:household-location"
#: Extension a mapping may set on ``Patient.birthDate`` when the age was estimated.
ESTIMATED_BIRTHDATE = "urn:chw-gateway:extension:birthdate-estimated"
_NOT_LETTER = re.compile(r"[^a-z0-9 ]+")  # digits stay: "Twin 1" is not "Twin 2"
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Features:
    """The compared values of one Patient."""

    id: str
    given: str  # folded, given names joined by a space
    family: str
    birth: date | None
    birth_estimated: bool
    sex: str | None
    location: str | None
    phones: frozenset[str]  # the last ``phone_suffix_digits`` digits of each phone number
    national_ids: frozenset[tuple[str, str]]


def fold(text: str, rules: Rules, *, placeholders: frozenset[str] = frozenset()) -> str:
    """Lower-case ASCII letters, digits and single spaces, accents removed, ``placeholders`` words
    dropped, spelling variants applied."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    plain = _SPACES.sub(" ", _NOT_LETTER.sub(" ", plain.replace("-", " "))).strip()
    if placeholders:
        plain = " ".join(word for word in plain.split(" ") if word not in placeholders)
    for variant in rules.variants:
        plain = plain.replace(variant.from_, variant.to)
    return plain


def features(resource: dict[str, Any], rules: Rules) -> Features:
    """The compared values of a Patient resource (missing elements are empty or None)."""
    given, family = _name(resource, rules)
    birth, estimated = _birth(resource)
    gender = resource.get("gender")
    sex = gender if gender in ("male", "female") else None
    return Features(
        id=str(resource.get("id", "")), given=given, family=family, birth=birth, birth_estimated=estimated,
        sex=sex, location=_location(resource), phones=_phones(resource, rules.phone_suffix_digits),
        national_ids=_national_ids(resource, rules.national_id_systems),
    )  # fmt: skip


def _name(resource: dict[str, Any], rules: Rules) -> tuple[str, str]:
    names = [n for n in resource.get("name") or [] if isinstance(n, dict)]
    chosen = next((n for n in names if n.get("use") in ("official", "usual")), names[0] if names else None)
    if chosen is None:
        return "", ""
    given_parts = [g for g in chosen.get("given") or [] if isinstance(g, str)]
    family = chosen.get("family") if isinstance(chosen.get("family"), str) else ""
    if not given_parts and not family and isinstance(chosen.get("text"), str):
        words = chosen["text"].split()
        given_parts, family = words[:-1], words[-1] if words else ""
    return fold(" ".join(given_parts), rules, placeholders=rules.placeholder_given), fold(family or "", rules)


def _birth(resource: dict[str, Any]) -> tuple[date | None, bool]:
    value = resource.get("birthDate")
    if not isinstance(value, str):
        return None, False
    flagged = any(
        isinstance(e, dict) and e.get("url") == ESTIMATED_BIRTHDATE and e.get("valueBoolean") is True
        for e in (resource.get("_birthDate") or {}).get("extension") or []
    )
    parts = value.split("-")
    try:
        if len(parts) == 3:
            return date(int(parts[0]), int(parts[1]), int(parts[2])), flagged
        # A year or year-month only: the age was estimated, the middle of the span stands in.
        return (date(int(parts[0]), int(parts[1]), 15) if len(parts) == 2 else date(int(parts[0]), 7, 1)), True
    except ValueError:
        return None, False


def _location(resource: dict[str, Any]) -> str | None:
    for ext in resource.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == HOUSEHOLD_LOCATION:
            ref = (ext.get("valueReference") or {}).get("reference")
            if isinstance(ref, str):
                return str(ref)
    for address in resource.get("address") or []:
        if isinstance(address, dict):
            for key in ("district", "city", "state"):
                value = address.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip().lower()
    return None


def _phones(resource: dict[str, Any], digits: int) -> frozenset[str]:
    found = set()
    for telecom in resource.get("telecom") or []:
        if isinstance(telecom, dict) and telecom.get("system") == "phone" and isinstance(telecom.get("value"), str):
            number = "".join(ch for ch in telecom["value"] if ch.isdigit())
            if len(number) >= min(digits, 6):
                found.add(number[-digits:])
    return frozenset(found)


def _national_ids(resource: dict[str, Any], systems: list[str]) -> frozenset[tuple[str, str]]:
    wanted = set(systems)
    return frozenset(
        (i["system"], i["value"].strip())
        for i in resource.get("identifier") or []
        if isinstance(i, dict) and i.get("system") in wanted and isinstance(i.get("value"), str) and i["value"].strip()
    )
