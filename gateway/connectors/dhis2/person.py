"""Which person a Patient's tracked entity stands for (``options.tracked_entity_per``).

``record`` (the default): one tracked entity per source Patient, as delivered so far.
``person`` (with ``identity.enabled``): one tracked entity per person, keyed by the golden
record the source Patient's kept ``refer`` link points to (README "Identity"): the CommCare
and the CHT record of one person become one tracked entity, with the golden record's values,
and their visits enroll under it. A Patient not yet given a golden record waits (the identity
matcher runs right after each write); a golden record that was retired, because its person
turned out to be another's (a merge, an accepted pair), is reported for a hand merge.
"""

from __future__ import annotations

from typing import Any

from gateway.connectors.dhis2.sources import ResourceSource
from gateway.connectors.dhis2.uids import derive_uid
from gateway.errors import ConnectorError
from gateway.store import is_golden, linked_ids

JsonObject = dict[str, Any]
_MAX_HOPS = 10  # retired golden records chained by replaced-by (each merge adds one)


class PersonPendingError(ConnectorError):
    """The Patient has no golden record yet (the transformer turns it into ``Dhis2PendingError``: retry)."""


def person_of(patient: JsonObject, source: ResourceSource) -> tuple[str, JsonObject]:
    """``(Patient/{golden id}, golden record)`` of a source Patient, following retired golden records."""
    if is_golden(patient):
        return f"Patient/{patient['id']}", patient
    golden_ids = linked_ids(patient, "refer")
    if not golden_ids:
        raise PersonPendingError(f"Patient/{patient.get('id')} has no golden record yet")
    gid = golden_ids[0]
    for _ in range(_MAX_HOPS):
        golden = source.get("Patient", gid)
        if golden is None:
            raise PersonPendingError(f"Patient/{gid} (a golden record) is not stored yet")
        replaced = linked_ids(golden, "replaced-by")
        if not replaced:
            return f"Patient/{gid}", golden
        gid = replaced[0]
    raise PersonPendingError(f"Patient/{patient.get('id')}: golden records replaced more than {_MAX_HOPS} times")


def hand_merge_note(golden: JsonObject, namespace: str) -> str | None:
    """For a retired golden record: what an administrator must merge in DHIS2 by hand (else None)."""
    replaced = linked_ids(golden, "replaced-by")
    if not replaced:
        return None
    gone = derive_uid(namespace, "TRACKED_ENTITY", f"Patient/{golden['id']}")
    kept = derive_uid(namespace, "TRACKED_ENTITY", f"Patient/{replaced[0]}")
    return (
        f"tracked entity {gone} (Patient/{golden['id']}) is the same person as tracked entity {kept} "
        f"(Patient/{replaced[0]}); DHIS2 cannot move enrollments or events to another tracked entity "
        f"(E1126-E1128), so merge {gone} into {kept} by hand (Deduplication, or re-enter its events under {kept}); "
        "new visits of this person go to the kept tracked entity"
    )
