"""The mapping file format: pydantic models of ``mappings/<set>/*.yaml``.

A *mapping set* is a folder (``mappings/commcare/``) with a ``set.yaml`` (``SetSpec``) and one
mapping file per source record type (``MappingSpec``). Each mapping turns one source record
into the resources of one FHIR transaction Bundle through a list of *rules*, a discriminated
union on ``kind``:

* ``resource`` (``ResourceRule``): any FHIR resource from a JSON template;
* ``observation`` (``ObservationRule``): an Observation from a code and a typed value;
* ``referral`` (``ReferralRule``): a ServiceRequest plus the Task that tracks it.

Strings in templates may hold ``{{ expression }}`` placeholders; ``when``, ``for_each``,
``key``, ``id``, ``match`` and ``record_id`` are bare expressions. An expression is FHIRPath
(simple paths such as ``form.vitals.weight_kg`` are compiled to plain lookups) followed by
``| converter`` steps (see ``converters.py``). The pydantic models only check the shape; the
compiler (``compiler.py``) checks expressions, converters and ConceptMap references.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Defaults",
    "FormSpec",
    "MappingSpec",
    "ObservationRule",
    "ProvenanceSpec",
    "ReferralRule",
    "ResourceRule",
    "RetractSpec",
    "Rule",
    "RuleBase",
    "SetSpec",
    "UnitSpec",
]

_NAME = r"^[a-z][a-z0-9_]{0,62}$"
_MAPPING_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"

#: A JSON-like value whose strings may contain ``{{ … }}`` placeholders.
TemplateValue = Any


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RuleBase(_Strict):
    """Fields every rule kind shares.

    * ``name``: unique in the file; part of the deterministic id of what the rule makes.
    * ``when``: expression; the rule runs only if it is true (a bare path means "answered").
    * ``for_each``: expression; the rule runs once per item, with ``%item`` and ``%index``.
      For a repeat inside a repeat, a mapping of named levels, outermost first, each an
      expression that may read the levels before it (``{household: households, member:
      "%household.members"}``): the rule runs once per innermost item, ``%item``/``%index``
      are the innermost, ``%<level>``/``%<level>_index`` each level's item and position.
    * ``key``: expression giving a stable key per item (default ``%index``).
    * ``id``: expression giving the key of a *shared* entity (a person, a CHW, a household):
      its resource id is ``uuid5(system|Type|key)``, the same id every ``| ref('Type')``
      of that key resolves to, so records of one source link up in any order. Without
      ``id`` the resource belongs to the record (``uuid5(system|Type|record/rule[/key])``).
    * ``template``: extra FHIR elements merged into what the rule kind builds.
    * ``let``: named values evaluated per item of a ``for_each`` rule (they see ``%item``
      and ``%index``), usable as ``%name`` in the rule's ``when``, ``key``, ``id`` and body.
    * ``on_retract``: what happens to what the rule made once an edit (or a deletion) of
      the record no longer makes it: ``entered-in-error`` (a status change: see
      ``gateway.ingest.retractions``), ``delete`` or ``keep``. Default: the status change
      where the resource type has one, else a delete.
    * ``on_update``: what the rule's resource does to a stored version of it: ``replace``
      it whole (the default), or ``merge``: keep the stored top-level elements the record
      leaves out (a follow-up form that makes the Patient without its name does not remove
      the name the registration stored; see ``gateway.fhir.merge``).
    """

    name: str = Field(pattern=_NAME)
    when: str | None = None
    for_each: str | dict[Annotated[str, Field(pattern=_NAME)], str] | None = None
    key: str | None = None
    id: str | None = None
    template: dict[str, TemplateValue] = {}
    let: dict[Annotated[str, Field(pattern=_NAME)], TemplateValue] = {}
    on_retract: Literal["entered-in-error", "delete", "keep"] | None = None
    on_update: Literal["replace", "merge"] = "replace"

    def repeat_text(self) -> str | None:
        """``for_each`` as one text (rules with the same text repeat over the same items)."""
        if self.for_each is None or isinstance(self.for_each, str):
            return None if self.for_each is None else self.for_each.strip()
        return "; ".join(f"{name}: {text.strip()}" for name, text in self.for_each.items())


class ResourceRule(RuleBase):
    """Any FHIR resource, built from a template.

    Example::

        - name: encounter
          kind: resource
          resourceType: Encounter
          template:
            status: finished
            class: {system: "http://terminology.hl7.org/CodeSystem/v3-ActCode", code: HH}
            subject: "{{ %patient }}"
            period: {start: "{{ form.meta.timeStart | datetime }}"}
    """

    kind: Literal["resource"]
    resource_type: str = Field(alias="resourceType", pattern=r"^[A-Z][A-Za-z]{1,63}$")
    template: dict[str, TemplateValue]


class UnitSpec(_Strict):
    """A UCUM unit: ``code`` is the UCUM code, ``unit`` the human display."""

    code: str
    unit: str | None = None
    system: str = "http://unitsofmeasure.org"


class ObservationRule(RuleBase):
    """One Observation: a code, a typed value, subject/encounter/effective from ``defaults``.

    The rule is skipped when ``value`` is given but empty (an unanswered question). The
    value type follows the value unless ``value_type`` says otherwise: a boolean gives
    ``valueBoolean``, a number with a ``unit`` ``valueQuantity``, a Coding or CodeableConcept
    ``valueCodeableConcept``, a string ``valueString``.

    Example::

        - name: weight
          kind: observation
          category: vital-signs
          code: "{{ 'body_weight' | concept('chw-observations') }}"
          value: "{{ form.vitals.weight_kg | decimal }}"
          unit: kg
    """

    kind: Literal["observation"]
    code: TemplateValue
    value: TemplateValue = None
    value_type: (
        Literal["quantity", "integer", "boolean", "string", "codeable_concept", "date_time"] | None
    ) = None
    unit: str | UnitSpec | None = None
    category: str | list[str] | None = None
    status: str = "final"
    subject: TemplateValue = None
    encounter: TemplateValue = None
    effective: TemplateValue = None
    performer: TemplateValue = None


class ReferralRule(RuleBase):
    """A referral to a facility: a ServiceRequest (intent order) and a Task to fulfil it.

    ``facility`` (a Reference) becomes ``ServiceRequest.performer`` and ``Task.owner``;
    ``priority`` must yield a FHIR request priority (routine | urgent | asap | stat),
    typically through ``| code('referral-priority')``. ``task_template`` is merged into
    the Task as ``template`` is into the ServiceRequest.

    Example::

        - name: referral
          kind: referral
          when: "form.referral.refer_patient | boolean"
          code: "{{ 'patient_referral' | concept('chw-procedures') }}"
          reason: "{{ form.referral.referral_reason | split | concept('referral-reasons') }}"
          priority: "{{ form.referral.referral_urgency | code('referral-priority') }}"
          facility: {display: "{{ form.referral.referral_facility_name }}"}
    """

    kind: Literal["referral"]
    code: TemplateValue
    reason: TemplateValue = None
    priority: TemplateValue = None
    facility: TemplateValue = None
    occurrence: TemplateValue = None
    note: TemplateValue = None
    subject: TemplateValue = None
    encounter: TemplateValue = None
    authored: TemplateValue = None
    requester: TemplateValue = None
    task_template: dict[str, TemplateValue] = {}


Rule = Annotated[ResourceRule | ObservationRule | ReferralRule, Field(discriminator="kind")]


class Defaults(_Strict):
    """Values observation and referral rules use unless they set their own."""

    subject: TemplateValue = None
    encounter: TemplateValue = None
    effective: TemplateValue = None
    performer: TemplateValue = None


class ProvenanceSpec(_Strict):
    """The Provenance written with every Bundle: ``recorded`` is required (an instant; a
    date-only value gets ``T00:00:00Z``), ``agent`` is a Reference (default: the source
    system by display)."""

    recorded: TemplateValue
    agent: TemplateValue = None


class MappingSpec(_Strict):
    """One mapping file: how one source record type becomes a transaction Bundle.

    Example (abridged)::

        mapping: cht-person
        version: 1.2.0
        match: "type = 'person'"
        record_id: _id
        provenance: {recorded: "{{ reported_date | epoch_ms }}"}
        let:
          patient: "{{ _id | ref('Patient') }}"
        rules:
          - name: patient
            kind: resource
            resourceType: Patient
            id: _id
            template: {...}

    ``modified`` (optional) is an expression reading the record's version at its source, a
    value that grows with every edit (``server_date_modified``, ``_rev``; see
    ``gateway.mapping.versions``): a version received after a later one of the same record
    is not stored over it (ingest answers ``stale``). Without it, the last received wins.
    """

    mapping: str = Field(pattern=_MAPPING_NAME)
    version: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+-]{0,31}$")
    description: str = ""
    match: str | None = None
    record_id: str
    modified: str | None = None
    provenance: ProvenanceSpec
    let: dict[Annotated[str, Field(pattern=_NAME)], TemplateValue] = {}
    defaults: Defaults = Defaults()
    rules: list[Rule] = Field(min_length=1)


class RetractSpec(_Strict):
    """``set.yaml``'s ``retract``: how a source says a record was deleted or voided.

    ``when`` is an expression true for such a record (a CHT ``_deleted`` document, an
    archived CommCare form, a rejected ODK submission); ``record_id`` reads its id, which
    must be the id its mapping's ``record_id`` read when the record was stored. Everything
    that record produced is then retracted. ``modified`` (optional) reads the deletion's
    version, as a mapping's ``modified`` does: a deletion older than the stored version is
    not applied, and an edit older than the deletion is not stored after it.
    """

    when: str
    record_id: str
    modified: str | None = None


class FormSpec(_Strict):
    """One entry of ``set.yaml``'s ``forms``: a form definition whose submissions a mapping file
    of the set handles, for the static checks (field names, types and choices).

    ``file`` (relative to the set folder) is an XLSForm (``.xlsx``, ``.xls``, ``.csv``), an
    XForm (``.xml``) or a CommCare app (``.json``, the Application Structure API answer);
    ``form`` picks one form of an app by xmlns, unique id or name. ``layout`` says how the
    source lays a submission out: ``odk``, ``kobo``, ``cht`` or ``commcare`` (the default
    for a ``.json`` app). ``mapping`` is the mapping file (in the set folder) it is for.
    """

    file: str
    mapping: str
    layout: Literal["odk", "kobo", "cht", "commcare"] | None = None
    form: str | None = None


class SetSpec(_Strict):
    """``set.yaml``: a mapping set, what a configured source's ``mapping`` names.

    ``system`` is the source system's URI: the namespace of deterministic ids and the base
    of identifier systems (``%system`` in expressions). ``mappings`` lists the mapping files
    in the order their ``match`` is tried (default: all other ``*.yaml`` files, sorted).
    ``retract`` (optional) recognises deleted and voided records (``RetractSpec``).
    ``inputs`` lists more example records (``.json``/``.csv`` files, relative to the set
    folder) for the static checks' input schema, besides the golden inputs: records with the
    fields an app sends only sometimes. ``forms`` points at form definitions (``FormSpec``):
    their questions join the input schema, with their types and choice lists.
    """

    name: str = Field(pattern=_MAPPING_NAME)
    title: str = ""
    system: str = Field(pattern=r"^(urn:|https?://)\S+$")
    mappings: list[str] | None = None
    retract: RetractSpec | None = None
    inputs: list[str] = []
    forms: list[FormSpec] = []
