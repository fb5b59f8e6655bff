"""``_summary`` and ``_elements``: returning part of a resource (search.html#summary).

Summary flags come from the R4B models' element metadata (``summary_element_property``),
read once per type. Subsetted resources are tagged ``SUBSETTED`` as FHIR requires.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from gateway.r4 import R4_ONLY_TYPES, load_table

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "Resource encoded in summary mode",
}
_ALWAYS = {"resourceType", "id", "meta"}


@cache
def summary_elements(rtype: str) -> frozenset[str]:
    """JSON property names of a type's summary elements (choice elements expanded)."""
    if rtype in R4_ONLY_TYPES:
        return frozenset({"id", "meta", "identifier", "status"})
    from fhir.resources.R4B import get_fhir_model_class

    model = get_fhir_model_class(rtype)
    names: set[str] = set()
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("summary_element_property"):
            names.add(info.alias or name)
    return frozenset(names)


@cache
def _element_table() -> dict[str, Any]:
    types: dict[str, Any] = load_table("r4-elements.json")["types"]
    return types


@cache
def mandatory_elements(rtype: str) -> frozenset[str]:
    """Top-level elements a type requires: complex ones (``Condition.subject``), primitive ones
    (``Observation.status``) and every JSON name of a required choice (``MedicationRequest.medication[x]``).

    ``_elements`` and ``_summary=text`` must still return them (search.html#elements), or the
    subsetted resource is not valid FHIR JSON. The complex ones come from the table the strict
    checker uses; the primitive ones and choices (which the models check) from the R4B models'
    metadata, kept to the properties R4 has.
    """
    entry = _element_table().get(rtype) or {}
    names = set(entry.get("r", ()))
    if rtype and rtype not in R4_ONLY_TYPES and entry:
        from fhir.resources.R4B import get_fhir_model_class

        r4_props = entry.get("p", {})
        for name, info in get_fhir_model_class(rtype).model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and (extra.get("element_required") or extra.get("one_of_many_required")):
                prop = info.alias or name
                if prop in r4_props:
                    names.add(prop)
    return frozenset(names)


@cache
def _choice_names(rtype: str) -> dict[str, str]:
    """A type's choice properties by the element name they write: ``valueQuantity`` → ``value``
    (``value[x]``), so ``_elements=value`` keeps whichever type the resource has."""
    entry = _element_table().get(rtype) or {}
    props: dict[str, Any] = entry.get("p", {})
    return {
        prop: base
        for base in entry.get("c", ())
        for prop in props
        if prop.startswith(base) and prop[len(base) : len(base) + 1].isupper()
    }


def _tag(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    meta["tag"] = [*tags, SUBSETTED]
    resource["meta"] = meta
    return resource


def subset(resource: dict[str, Any], summary: str | None, elements: list[str] | None) -> dict[str, Any]:
    """Apply ``_summary``/``_elements`` to a resource's JSON."""
    rtype = resource.get("resourceType", "")
    if elements is not None:
        wanted = {e.split(".", 1)[0] for e in elements} | _ALWAYS | mandatory_elements(rtype)
        if rtype:
            wanted |= {e[len(rtype) + 1 :].split(".", 1)[0] for e in elements if e.startswith(rtype + ".")}
        wanted = {name.removesuffix("[x]") for name in wanted}
        choices = _choice_names(rtype)
        return _tag({k: v for k, v in resource.items() if _base(k) in wanted or choices.get(_base(k)) in wanted})
    if summary == "true":
        keep = summary_elements(rtype) | _ALWAYS
        return _tag({k: v for k, v in resource.items() if _base(k) in keep})
    if summary == "text":
        keep = mandatory_elements(rtype) | _ALWAYS | {"text"}
        return _tag({k: v for k, v in resource.items() if _base(k) in keep})
    if summary == "data":
        return _tag({k: v for k, v in resource.items() if k != "text"})
    return resource


def _base(key: str) -> str:
    return key[1:] if key.startswith("_") else key
