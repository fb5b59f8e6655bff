"""What the EMR writes through the FHIR API does not go back to it (``filter.exclude_clients``).

In the referral loop the facility's EMR records the visit and updates the Task through the
gateway's FHIR API, in its own terms (its own patient uuid). Sent back to the same EMR as a
destination, such an Encounter waited for a gateway Patient that never comes and ended a dead
letter, and the Task went back to where it came from. Every API write stores a Provenance naming
the client; a destination that excludes the EMR's client skips those versions, and only those.
"""

from __future__ import annotations

from typing import Any

from gateway.delivery.config import SubscriptionFilter
from tests.conftest import ApiHarness, make_token
from tests.dhis2 import cht_records as cht
from tests.dhis2.test_end_to_end import ingest
from tests.openmrs.conftest import Emr, destination
from tests.openmrs.test_end_to_end import deliver, stored

TYPES = ("Patient", "Encounter", "ServiceRequest", "Task")
FHIR = {"Content-Type": "application/fhir+json"}


def _encounter(like: dict[str, Any], subject: str) -> dict[str, Any]:
    """A visit recorded like the CHW's ``like`` (type, period, location), of ``subject``."""
    kept = ("status", "class", "type", "period", "location", "serviceProvider")
    return {"resourceType": "Encounter", **{k: like[k] for k in kept if k in like}, "subject": {"reference": subject}}


async def test_the_emr_gets_back_none_of_its_own_writes_and_every_other_clients(
    api: ApiHarness, service_for: Any, emr: Emr
) -> None:
    await ingest(api, [cht.area(), cht.household(1), cht.person(1), cht.assessment(1)])
    config = destination(emr, upsert=["Task"])
    config = config.model_copy(update={"filter": SubscriptionFilter(resource_types=TYPES, exclude_clients=("emr",))})
    service = service_for(config)
    await service.start()
    await deliver(service, api)
    [openmrs_patient] = stored(emr)["Patient"]
    [task] = (await api.client.get("/fhir/Task")).json()["entry"]
    gateway_patient = task["resource"]["for"]["reference"]
    [chw_visit] = (await api.client.get("/fhir/Encounter")).json()["entry"]
    like = chw_visit["resource"]

    the_emr = api.with_scopes(token=make_token(api.store, ("system/Task.rus", "system/Encounter.crus"), name="emr"))
    own_terms = _encounter(like, f"Patient/{openmrs_patient['id']}")  # OpenMRS's patient uuid
    visit = await the_emr.post("/fhir/Encounter", json=own_terms, headers=FHIR)
    assert visit.status_code == 201, visit.text
    done = {**task["resource"], "status": "completed",
            "output": [{"type": {"text": "visit"}, "valueReference": {"reference": f"Encounter/{visit.json()['id']}"}}]}
    assert (await the_emr.put(f"/fhir/Task/{done['id']}", json=done, headers=FHIR)).status_code == 200
    other = api.with_scopes(token=make_token(api.store, ("system/Encounter.crus",), name="clinic-b"))
    theirs = await other.post("/fhir/Encounter", json=_encounter(like, gateway_patient), headers=FHIR)
    assert theirs.status_code == 201, theirs.text

    await deliver(service, api)
    stats = await service.queue.stats("openmrs")
    assert (stats.dead, stats.retrying) == (0, 0)
    after = stored(emr)
    assert len(after["Encounter"]) == 2  # the CHW's visit and clinic B's, not the EMR's own echoed
    assert {e["subject"]["reference"] for e in after["Encounter"]} == {f"Patient/{openmrs_patient['id']}"}
    [openmrs_task] = after["Task"]
    assert openmrs_task["status"] == "requested"  # the EMR's own update is not sent back to it

