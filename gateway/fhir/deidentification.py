"""De-identified copies of resources, for clients whose data policy says ``deidentify``.

A fixed recipe in the spirit of HIPAA Safe Harbor, kept simple enough for a data
protection officer to read here: every resource loses its narrative (``text``), business
identifiers (``identifier``, which hold national ids and phone-like numbers), free-text
notes (``note``, ``comment``) and the display text of references (often a name);
persons (Patient, RelatedPerson, Person, Practitioner) also lose names, contacts,
telecoms and photos, keep only the district, state and country of their addresses, and
keep only the year of dates of birth and death. Contained resources get the same. Ids
are the gateway's own (derived from source record keys), so references still join.

Bulk export's de-identified profiles are declarative instead (``DeidentifyRules``, read from
a YAML file) and go further: dates shifted per patient by a keyed offset, pseudonymous ids
(keyed hashes, references rewritten to match), birth dates of the very old removed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from gateway import jsonio
from gateway.errors import ConfigError
from gateway.search import ADDRESS_KEPT, EVERYWHERE, PERSON_ELEMENTS, PERSONS, YEAR_ONLY
from gateway.store import KEPT_LINK_EXTENSION, is_kept_link

# The recipe's lists (EVERYWHERE, PERSONS, ...) live with the search layer, which refuses
# searches by what they strip.
#: Dropped at any depth: a Reference's identifier names the same person as the resource's own,
#: and an extension's Identifier value may hold a national id.
_NESTED = frozenset({"note", "comment", "identifier", "valueIdentifier"})


def deidentify(resource: dict[str, Any]) -> dict[str, Any]:
    """A de-identified copy of ``resource`` (the argument is not changed)."""
    out: dict[str, Any] = {}
    person = resource.get("resourceType") in PERSONS
    for key, value in resource.items():
        if key in EVERYWHERE or (person and key in PERSON_ELEMENTS):
            continue
        if key == "contained" and isinstance(value, list):
            out[key] = [deidentify(item) if isinstance(item, dict) else item for item in value]
        elif person and key == "address" and isinstance(value, list):
            kept = [{k: v for k, v in a.items() if k in ADDRESS_KEPT} for a in value if isinstance(a, dict)]
            if any(kept):
                out[key] = [a for a in kept if a]
        elif person and key in YEAR_ONLY and isinstance(value, str):
            out[key] = value[:4]
        else:
            out[key] = _scrub(value)
    return out


def without_matcher_links(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` without the ``Patient.link`` elements the gateway wrote (the identity matcher's
    links to other sources' records of the person and to the golden record), for a client whose
    data policy limits rows: they name records the policy may hide, and that they are the same
    person. Links clients wrote stay. The argument is not changed; unchanged, it is returned."""
    links = resource.get("link")
    if resource.get("resourceType") != "Patient" or not isinstance(links, list):
        return resource
    kept = [link for link in links if not is_kept_link(link)]
    if len(kept) == len(links):
        return resource
    out = {k: v for k, v in resource.items() if k != "link"}
    if kept:
        out["link"] = kept
    return out


def as_policy_gives(resource: dict[str, Any], *, limits_rows: bool, deidentified: bool) -> dict[str, Any]:
    """A resource as a data policy gives it to a client (or a destination): without the identity
    matcher's links when the policy limits rows, de-identified when it says so; the argument is
    not changed (returned as it is when nothing applies)."""
    if limits_rows:
        resource = without_matcher_links(resource)
    return deidentify(resource) if deidentified else resource


_KEPT_LINK = KEPT_LINK_EXTENSION.encode()


def content_as_policy_gives(content: bytes, *, limits_rows: bool, deidentified: bool) -> bytes:
    """``as_policy_gives`` of a stored resource's JSON, parsed only when something applies."""
    if not deidentified and not (limits_rows and _KEPT_LINK in content):
        return content
    return jsonio.dumps(as_policy_gives(jsonio.loads(content), limits_rows=limits_rows, deidentified=deidentified))


def _scrub(value: Any) -> Any:
    """Drop reference display texts, nested notes and identifiers below the top level."""
    if isinstance(value, dict):
        reference = "reference" in value
        return {k: _scrub(v) for k, v in value.items() if not (reference and k == "display") and k not in _NESTED}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


# -- rule-driven de-identification (the research profile of bulk export) -------------------

_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?$")
# Keys whose string values are names of things, never dates worth shifting.
_NOT_DATES = frozenset({"reference", "system", "url", "code", "id", "version", "versionId", "value"})


class RulesError(ConfigError):
    """A de-identification rule file that cannot be understood (names the key at fault)."""


@dataclass(frozen=True, slots=True)
class DeidentifyRules:
    """A declarative de-identification profile (a YAML file; see ``gateway/export/data/research.yaml``)."""

    name: str
    remove: tuple[str, ...]  # elements dropped from every resource, at any depth
    remove_by_type: Mapping[str, tuple[str, ...]]  # top-level elements dropped from some types ("*": all)
    address_keep: tuple[str, ...]  # parts of an Address kept (the rest dropped)
    shift_days: int  # dates move by a per-patient offset in [-shift_days, shift_days] (0: not shifted)
    birth_date: str  # year | remove
    age_over: int  # older than this at export time: the birth date is removed
    pseudonymise_ids: bool  # ids and references replaced by keyed hashes
    drop_reference_display: bool

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DeidentifyRules:
        """Read a profile from its parsed YAML form."""
        known = {"name", "description", "remove", "remove_by_type", "address_keep", "dates", "ids",
                 "reference_display"}
        if not isinstance(data, Mapping):
            raise RulesError("a de-identification profile is a mapping")
        unknown = sorted(set(data) - known)
        if unknown:
            raise RulesError(f"unknown key {unknown[0]!r} (use {', '.join(sorted(known))})")
        dates = data.get("dates") or {}
        if not isinstance(dates, Mapping):
            raise RulesError("dates: must be a mapping")
        by_type = data.get("remove_by_type") or {}
        if not isinstance(by_type, Mapping):
            raise RulesError("remove_by_type: must map resource types to element lists")
        birth = dates.get("birth_date", "year")
        if birth not in ("year", "remove"):
            raise RulesError("dates.birth_date: must be year or remove")
        shift, age = dates.get("shift_days", 0), dates.get("remove_birth_date_over_age", 89)
        if not isinstance(shift, int) or not 0 <= shift <= 3650:
            raise RulesError("dates.shift_days: must be a whole number of days from 0 to 3650")
        if not isinstance(age, int) or age < 1:
            raise RulesError("dates.remove_birth_date_over_age: must be a positive whole number")
        ids = data.get("ids", "keep")
        if ids not in ("keep", "pseudonymise"):
            raise RulesError("ids: must be keep or pseudonymise")
        display = data.get("reference_display", "drop")
        if display not in ("keep", "drop"):
            raise RulesError("reference_display: must be keep or drop")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise RulesError("name: must be a non-empty string")
        return cls(
            name=name,
            remove=_strings(data.get("remove") or [], "remove"),
            remove_by_type={str(t): _strings(v, f"remove_by_type.{t}") for t, v in by_type.items()},
            address_keep=_strings(data.get("address_keep") or [], "address_keep"),
            shift_days=shift,
            birth_date=birth,
            age_over=age,
            pseudonymise_ids=ids == "pseudonymise",
            drop_reference_display=display == "drop",
        )


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RulesError(f"{key}: must be a list of element names")
    return tuple(value)


class Deidentifier:
    """Applies ``DeidentifyRules`` with a secret key: the same key gives the same pseudonyms and date
    shifts in every export, so one patient's records still line up across exports."""

    def __init__(self, rules: DeidentifyRules, key: bytes, today: date | None = None) -> None:
        self.rules = rules
        self._key = key
        self._today = today or date.today()
        self._remove = frozenset(rules.remove)

    def pseudonym(self, rtype: str, rid: str) -> str:
        """The stable pseudonymous id of ``rtype/rid`` (a keyed hash, 32 hex digits: a valid FHIR id)."""
        return hmac.new(self._key, f"id\x00{rtype}/{rid}".encode(), hashlib.sha256).hexdigest()[:32]

    def shift(self, patient: str | None) -> int:
        """Days every date of ``patient``'s records moves by (0 without a patient or shifting)."""
        if patient is None or self.rules.shift_days == 0:
            return 0
        digest = hmac.new(self._key, f"shift\x00{patient}".encode(), hashlib.sha256).digest()
        span = 2 * self.rules.shift_days
        offset = int.from_bytes(digest[:8], "big") % span - self.rules.shift_days
        return offset

    def apply(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A de-identified copy of ``resource``."""
        rtype = str(resource.get("resourceType", ""))
        patient = _patient_of(resource)
        days = self.shift(patient)
        by_type = self.rules.remove_by_type
        drop = self._remove | frozenset(by_type.get("*", ())) | frozenset(by_type.get(rtype, ()))
        out = self._walk(resource, drop, days, top=True)
        assert isinstance(out, dict)
        if rtype in PERSONS and isinstance(resource.get("birthDate"), str):
            out.pop("birthDate", None)
            birth = resource["birthDate"]
            year = int(birth[:4]) if birth[:4].isdigit() else None
            old = year is not None and self._today.year - year > self.rules.age_over
            if year is not None and not old and self.rules.birth_date == "year":
                out["birthDate"] = _shift_date(birth, days)[:4]
        if self.rules.pseudonymise_ids and isinstance(resource.get("id"), str) and rtype:
            out["id"] = self.pseudonym(rtype, resource["id"])
        meta = out.get("meta")
        if isinstance(meta, dict):
            meta.pop("source", None)  # names the sending system and often its record key
        return out

    def _walk(self, value: Any, drop: frozenset[str], days: int, *, top: bool = False, key: str = "") -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            is_reference = "reference" in value and isinstance(value.get("reference"), str)
            for k, v in value.items():
                if k in drop or (not top and k in self._remove):
                    continue
                if is_reference and k == "display" and self.rules.drop_reference_display:
                    continue
                if is_reference and k == "reference":
                    ref = self._reference(v)
                    if ref is not None:
                        out[k] = ref
                    continue
                if k in ("address",) and isinstance(v, list):
                    kept = [{p: a[p] for p in self.rules.address_keep if p in a} for a in v if isinstance(a, dict)]
                    if any(kept):
                        out[k] = [a for a in kept if a]
                    continue
                out[k] = self._walk(v, drop if top else frozenset(), days, key=k)
            return out
        if isinstance(value, list):
            return [self._walk(item, drop, days, key=key) for item in value]
        if days and isinstance(value, str) and key not in _NOT_DATES:
            return _shift_date(value, days)
        return value

    def _reference(self, ref: str) -> str | None:
        """A reference with its target pseudonymised; None for one that leaves the export (absolute URLs)."""
        if ref.startswith("#") or not self.rules.pseudonymise_ids:
            return ref
        rtype, slash, rest = ref.partition("/")
        if not slash or "/" in rest.split("/_history")[0] or ":" in rtype:
            return None
        rid = rest.split("/_history")[0]
        return f"{rtype}/{self.pseudonym(rtype, rid)}"


def _patient_of(resource: dict[str, Any]) -> str | None:
    """The Patient a resource is about: itself, its subject/patient, else the first Patient it refers to."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    for key in ("subject", "patient", "beneficiary", "for"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str) and ref["reference"].startswith("Patient/"):
            return str(ref["reference"][8:])
    return _first_patient(resource)


def _first_patient(value: Any) -> str | None:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and ref.startswith("Patient/"):
            return ref[8:]
        for item in value.values():
            found = _first_patient(item)
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _first_patient(item)
            if found is not None:
                return found
    return None


def _shift_date(value: str, days: int) -> str:
    """``value`` moved by ``days`` when it is a FHIR date or dateTime to the day (coarser values are kept)."""
    match = _DATE_RE.match(value)
    if match is None:
        return value
    try:
        day = date(int(match[1]), int(match[2]), int(match[3])) + timedelta(days=days)
    except (ValueError, OverflowError):
        return value
    return day.isoformat() + (match[4] or "")
