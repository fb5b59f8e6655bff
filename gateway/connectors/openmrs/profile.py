"""A gateway resource as the OpenMRS FHIR2 module takes it (what ``OpenMrsConnector`` sends).

* Patient identifiers: each system the ``identifier_types`` ConceptMap lists becomes an
  identifier of that OpenMRS type (``type.text`` = the type's name, which the module
  resolves; its uuid as the coding), with the identifier location OpenMRS requires; other
  identifiers are left out (the module would drop them).
* Encounter: ``type`` through the ``encounter_types`` ConceptMap to the OpenMRS encounter
  type uuid (system ``http://fhir.openmrs.org/code-system/encounter-type``), tagged as an
  encounter (not a visit); ``location`` through the ``locations`` ConceptMap.
* Task: a referral's ``focus``/``basedOn`` ServiceRequest is read-only in OpenMRS, so what
  it says (the referral, its reasons, the facility) travels in the Task's ``note``.
* References: to a resource the destination received, rewritten to the id OpenMRS gave it
  (a resource whose reference is not delivered yet waits); to a Location, through the
  ``locations`` ConceptMap; to anything else (a CHW's Practitioner, an Organization), left
  out: OpenMRS holds no such object of ours.
* ``meta``, ``text``, ``extension``, (except on a Patient) ``identifier`` and the identity
  matcher's kept ``Patient.link`` elements are the gateway's, and are not sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway import jsonio
from gateway.connectors.base import Job
from gateway.mapping import ConceptTable
from gateway.store import DestinationIds, ResourceStore, is_kept_link

ENCOUNTER_TYPE_SYSTEM = "http://fhir.openmrs.org/code-system/encounter-type"
ENCOUNTER_TAG_SYSTEM = "http://fhir.openmrs.org/ext/encounter-tag"
IDENTIFIER_LOCATION_URL = "http://fhir.openmrs.org/ext/patient/identifier#location"
# Types this profile writes to OpenMRS: references to them must point at what OpenMRS holds.
SENT_TYPES = frozenset({
    "Patient", "Encounter", "Observation", "Task", "Condition", "AllergyIntolerance", "DiagnosticReport",
    "Immunization", "MedicationDispense",
})  # fmt: skip
_GATEWAY_ONLY = ("id", "meta", "text", "extension", "contained")
_PART_OF_DEPTH = 5  # a household, its CHW area, its sub-county…: enough to reach a mapped place

Json = dict[str, Any]


class SiteStore(ResourceStore, DestinationIds, Protocol):
    """What the profile reads: resources (Locations, ServiceRequests) and the ids OpenMRS assigned."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """The body to send, and what is known of the resource at OpenMRS."""

    body: Json
    remote_id: str | None  # the id OpenMRS gave it, if confirmed
    pending: bool  # a create was sent before and never confirmed: look for it before creating


@dataclass(frozen=True, slots=True)
class Waiting:
    """References to resources OpenMRS has not received yet."""

    refs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unsendable:
    """The resource cannot be put in OpenMRS's terms (a missing ConceptMap entry)."""

    reason: str
    detail: str


class OpenMrsProfile:
    """Translates jobs' resources for one OpenMRS destination (synchronous: reads the store)."""

    def __init__(
        self,
        destination: str,
        store: SiteStore,
        *,
        identifier_types: ConceptTable,
        encounter_types: ConceptTable,
        locations: ConceptTable,
    ) -> None:
        self.destination = destination
        self.store = store
        self.identifier_types = identifier_types
        self.encounter_types = encounter_types
        self.locations = locations

    def prepare(self, job: Job) -> Prepared | Waiting | Unsendable:
        """The OpenMRS body of ``job``'s resource, or why it cannot be sent now."""
        resource = job.resource()
        body = {key: value for key, value in resource.items() if key not in (*_GATEWAY_ONLY, "identifier")}
        if job.resource_type == "Patient" and "link" in body:
            # The identity matcher's links (to the person's other records and golden record, which
            # name this one back) are the gateway's: waiting for them would wait for ever.
            links = [link for link in body.pop("link") or [] if not is_kept_link(link)]
            if links:
                body["link"] = links
        if job.resource_type == "Task":
            body = self._task(body)
        wanted = [job.ref, *_references(body, SENT_TYPES)]
        ids = self.store.destination_ids(self.destination, wanted)
        missing: list[str] = []
        rewritten = self._rewrite(body, ids, missing)
        if missing:
            return Waiting(tuple(dict.fromkeys(missing)))
        # Set after the rewrite: these already name OpenMRS objects.
        if job.resource_type == "Patient":
            rewritten["identifier"] = self._identifiers(resource)
        if job.resource_type == "Encounter":
            typed = self._encounter_type(resource)
            if isinstance(typed, Unsendable):
                return typed
            rewritten["type"] = [typed]
            rewritten["meta"] = {"tag": [{"system": ENCOUNTER_TAG_SYSTEM, "code": "encounter"}]}
            default = self.location_id(None)
            if not rewritten.get("location") and default:
                rewritten["location"] = [{"location": {"reference": f"Location/{default}"}}]
        own = ids.get(job.ref)
        return Prepared(rewritten, own, pending=job.ref in ids and own is None)

    # -- Patient -------------------------------------------------------------------------------
    def _identifiers(self, resource: Json) -> list[Json]:
        place = self.location_id(_household(resource))
        location = [{"url": IDENTIFIER_LOCATION_URL, "valueReference": {"reference": f"Location/{place}"}}]
        out: list[Json] = []
        for item in resource.get("identifier") or []:
            system, value = item.get("system"), item.get("value")
            if not system or not value or system not in self.identifier_types.source_codes:
                continue
            targets = self.identifier_types.lookup(system) or ()
            if not targets:
                continue
            kind = targets[0]
            sent: Json = {
                "use": item.get("use") or "usual",
                "system": system,
                "type": {"coding": [{"code": kind["code"]}], "text": kind.get("display") or kind["code"]},
                "value": value,
            }
            if place:
                sent["extension"] = location
            out.append(sent)
        # OpenMRS keeps exactly one preferred identifier, which FHIR2 writes as use "official".
        preferred = next((n for n, item in enumerate(out) if item["use"] == "official"), 0)
        for n, item in enumerate(out):
            item["use"] = "official" if n == preferred else "usual"
        return out

    # -- Encounter -----------------------------------------------------------------------------
    def _encounter_type(self, resource: Json) -> Json | Unsendable:
        codes = [c.get("code") for t in resource.get("type") or [] for c in t.get("coding") or [] if c.get("code")]
        for code in codes:
            if code in self.encounter_types.source_codes:
                targets = self.encounter_types.lookup(code) or ()
                if targets:
                    coding = {"system": ENCOUNTER_TYPE_SYSTEM, "code": targets[0]["code"]}
                    if targets[0].get("display"):
                        coding["display"] = targets[0]["display"]
                    return {"coding": [coding]}
        return Unsendable(
            "unmapped_encounter_type",
            f"no Encounter.type code ({', '.join(codes) or 'none'}) is in ConceptMap {self.encounter_types.id}",
        )

    # -- Location ------------------------------------------------------------------------------
    def location_id(self, reference: str | None) -> str:
        """The OpenMRS location of a gateway Location (by identifier, id, then partOf), else the default."""
        seen = 0
        while reference and reference.startswith("Location/") and seen < _PART_OF_DEPTH:
            seen += 1
            rid = reference.split("/", 1)[1]
            found = self.store.read("Location", rid)
            place: Json = jsonio.loads(found.content) if found is not None and not found.deleted else {}
            codes = [str(i.get("value")) for i in place.get("identifier") or [] if i.get("value")] + [rid]
            for code in codes:
                if code in self.locations.source_codes:
                    targets = self.locations.lookup(code) or ()
                    if targets:
                        return targets[0]["code"]
            reference = (place.get("partOf") or {}).get("reference")
        default = self.locations.lookup("\x00unmapped")  # the group's `unmapped` default
        if not default:
            return ""
        return default[0]["code"]

    # -- Task ----------------------------------------------------------------------------------
    def _task(self, body: Json) -> Json:
        notes = list(body.get("note") or [])
        for key in ("focus", "basedOn"):
            value = body.get(key)
            items = value if isinstance(value, list) else [value] if value else []
            kept = []
            for item in items:
                ref = str((item or {}).get("reference") or "")
                if not ref.startswith("ServiceRequest/"):
                    kept.append(item)
                    continue
                found = self.store.read("ServiceRequest", ref.split("/", 1)[1])
                if found is not None and not found.deleted:
                    notes.append({"text": _referral_note(jsonio.loads(found.content))})
            if not kept:
                body.pop(key, None)
            else:
                body[key] = kept if isinstance(value, list) else kept[0]
        if notes:
            body["note"] = notes
        return body

    # -- references ----------------------------------------------------------------------------
    def _rewrite(self, value: Any, ids: Mapping[str, str | None], missing: list[str]) -> Any:
        if isinstance(value, list):
            items = [self._rewrite(item, ids, missing) for item in value]
            return [item for item in items if item not in (None, {})]
        if not isinstance(value, dict):
            return value
        ref = value.get("reference")
        if isinstance(ref, str) and "/" in ref and not ref.startswith(("#", "urn:", "http:", "https:")):
            rtype = ref.split("/", 1)[0]
            plain = ref.split("/_history", 1)[0]
            if rtype == "Location":
                location = self.location_id(plain)
                return {"reference": f"Location/{location}"} if location else None
            if rtype in SENT_TYPES:
                remote = ids.get(plain)
                if remote is None:
                    missing.append(plain)
                    return value
                return {"reference": f"{rtype}/{remote}"}
            return {"display": value["display"]} if value.get("display") else None
        out = {}
        for key, item in value.items():
            rewritten = self._rewrite(item, ids, missing)
            if rewritten not in (None, {}, []):
                out[key] = rewritten
        return out


def _references(value: Any, types: frozenset[str]) -> list[str]:
    """Every ``Type/id`` reference to one of ``types`` inside ``value``."""
    found: list[str] = []
    if isinstance(value, list):
        for item in value:
            found.extend(_references(item, types))
    elif isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and ref.split("/", 1)[0] in types:
            found.append(ref.split("/_history", 1)[0])
        for item in value.values():
            if isinstance(item, dict | list):
                found.extend(_references(item, types))
    return found


def _household(resource: Json) -> str | None:
    """The Location a Patient extension points at (e.g. the gateway's household-location), if any."""
    for ext in resource.get("extension") or []:
        ref = (ext.get("valueReference") or {}).get("reference")
        if isinstance(ref, str) and ref.startswith("Location/"):
            return ref
    return None


def _text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    coding: Json = next(iter(concept.get("coding") or []), {})
    return str(concept.get("text") or coding.get("display") or coding.get("code") or "")


def _referral_note(request: Json) -> str:
    """What a referral ServiceRequest says, as one line for the Task's note."""
    parts = [f"Referral: {_text(request.get('code')) or 'referral'}"]
    reasons = [text for text in (_text(r) for r in request.get("reasonCode") or []) if text]
    if reasons:
        parts.append("reasons: " + "; ".join(reasons))
    places = [str(p.get("display")) for p in request.get("performer") or [] if p.get("display")]
    if places:
        parts.append("to: " + ", ".join(places))
    if request.get("priority"):
        parts.append(f"priority: {request['priority']}")
    return ". ".join(parts)
