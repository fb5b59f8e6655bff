"""The return-path connectors' own decisions: what they skip, wait for, and refuse (stand-ins over HTTP)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.clock import SystemClock
from gateway.connectors import Job, Permanent, Retry, Success
from gateway.connectors.referral import return_factories
from gateway.delivery.config import DestinationConfig
from gateway.store import Store
from source_sandbox import SourceSandbox
from tests.ingest.conftest import MAPPINGS, sample
from tests.support.live_server import LiveServer

DOMAIN = "pih-chw-demo"


@pytest.fixture
def sandbox() -> SourceSandbox:
    return SourceSandbox()


@pytest.fixture
def url(sandbox: SourceSandbox) -> Iterator[str]:
    with LiveServer(sandbox.app()) as server:
        yield server.url


def _context(set_name: str) -> dict[str, Any]:
    path = MAPPINGS / set_name / "outbound" / "tests" / "completed.input.json"
    value: dict[str, Any] = json.loads(path.read_text())
    return value


def _store_outputs(tx: Any, context: dict[str, Any]) -> None:
    """The visit and diagnosis the completed Task names (an outcome waits a little for them)."""
    for resource in context.get("outputs", ()):
        tx.create(resource, rid=resource["id"])


def _job(task: dict[str, Any], op: str = "update") -> Job:
    payload = b"" if op == "delete" else orjson.dumps(task)
    return Job(id=f"d:{task['id']}", destination="d", seq=1, resource_type="Task", resource_id=task["id"],
               version=2, op=op, key=task["for"]["reference"], payload=payload)  # type: ignore[arg-type]  # fmt: skip


def _cht_connector(store: Store, url: str) -> Any:
    """The cht-api connector, with the CHT stand-in's login."""
    return _connector(store, "cht-api", url, httpx.BasicAuth("gateway@example.org", "pull-secret"))


def _connector(store: Store, kind: str, url: str, auth: httpx.Auth | None) -> Any:
    options = {"mapping": str(MAPPINGS / ("cht" if kind == "cht-api" else "commcare")), "domain": DOMAIN}
    destination = DestinationConfig.model_validate({"name": "d", "kind": kind, "base_url": url, "options": options})
    api_key = {"Authorization": "ApiKey gateway@example.org:cc-api-key"}
    client = httpx.AsyncClient(auth=auth, headers={} if auth else api_key)
    return return_factories(store)[kind](destination, client=client, clock=SystemClock())


async def test_the_cht_connector_skips_what_is_not_its_outcome_and_reports_refusals(
    sqlite_store: Store, sandbox: SourceSandbox, url: str
) -> None:
    context = _context("cht")
    task = context["task"]
    with sqlite_store.transaction() as tx:  # an outcome waits for its Patient
        tx.create(context["patient"], rid=context["patient"]["id"])
        _store_outputs(tx, context)
    good = _cht_connector(sqlite_store, url)
    try:
        foreign = {**task, "meta": {**task["meta"], "source": "urn:chw-gateway:commcare:pih-chw-demo"}}
        waiting = {**task, "status": "requested"}
        outcomes = await good.deliver([_job(foreign), _job(waiting), _job(task, "delete")])
        assert all(isinstance(outcome, Success) for outcome in outcomes)
        assert not sandbox.requests  # nothing was sent for any of them
        (sent,) = await good.deliver([_job(task)])
        (repeat,) = await good.deliver([_job(task)])
        assert isinstance(sent, Success) and isinstance(repeat, Success) and "repeat" in (repeat.detail or "")
        assert len(sandbox.cht.reports("referral_outcome")) == 1
    finally:
        await good.aclose()
    wrong = _connector(sqlite_store, "cht-api", url, httpx.BasicAuth("gateway@example.org", "nope"))
    try:
        (refused,) = await wrong.deliver([_job({**task, "status": "rejected"})])
        assert isinstance(refused, Permanent) and refused.reason == "http_401"
    finally:
        await wrong.aclose()


async def test_a_task_an_emr_put_back_without_meta_goes_by_its_referral_source(
    sqlite_store: Store, sandbox: SourceSandbox, url: str
) -> None:
    """A PUT that rebuilds the Task drops meta.source: the focus ServiceRequest's decides."""
    context = _context("cht")
    task = {key: value for key, value in context["task"].items() if key != "meta"}
    request = context["request"]
    with sqlite_store.transaction() as tx:
        tx.create({**request, "meta": {"source": "urn:chw-gateway:commcare:pih-chw-demo"}}, rid=request["id"])
        tx.create(context["patient"], rid=context["patient"]["id"])
        _store_outputs(tx, context)
    connector = _cht_connector(sqlite_store, url)
    try:
        (foreign,) = await connector.deliver([_job(task)])
        assert isinstance(foreign, Success) and not sandbox.requests  # another app's referral
        with sqlite_store.transaction() as tx:
            tx.update({**request, "meta": {"source": context["task"]["meta"]["source"]}})
        (sent,) = await connector.deliver([_job(task)])
        assert isinstance(sent, Success), sent
        assert len(sandbox.cht.reports("referral_outcome")) == 1
    finally:
        await connector.aclose()


async def test_the_commcare_connector_waits_for_the_case_and_refuses_an_unknown_one(
    sqlite_store: Store, sandbox: SourceSandbox, url: str
) -> None:
    context = _context("commcare")
    connector = _connector(sqlite_store, "commcare-api", url, None)
    try:
        (waiting,) = await connector.deliver([_job(context["task"])])  # the Patient is not stored yet
        assert isinstance(waiting, Retry) and waiting.reason == "case_unknown" and waiting.link_ok
        with sqlite_store.transaction() as tx:
            tx.create(context["patient"], rid=context["patient"]["id"])
            _store_outputs(tx, context)
        (refused,) = await connector.deliver([_job(context["task"])])  # CommCare has no such case
        assert isinstance(refused, Permanent) and refused.reason == "commcare_submit_error"
        assert refused.response is not None and "IllegalCaseId" in refused.response.body
    finally:
        await connector.aclose()


def test_a_return_destination_without_outbound_mappings_is_refused(sqlite_store: Store, tmp_path: Any) -> None:
    from gateway.connectors import DeliveryConfigError

    destination = DestinationConfig.model_validate(
        {"name": "d", "kind": "cht-api", "base_url": "http://127.0.0.1:9",
         "options": {"mapping": str(MAPPINGS / "kobo")}}
    )  # fmt: skip
    assert destination.filter.resource_types == ("Task",)
    with pytest.raises(DeliveryConfigError, match="outbound"):
        return_factories(sqlite_store)["cht-api"](destination, client=httpx.AsyncClient(), clock=SystemClock())


def test_the_configuration_names_a_bad_return_path_option() -> None:
    from pydantic import ValidationError

    from gateway.settings import Settings

    with pytest.raises(ValidationError, match=r"destination cc: options\.domian"):
        Settings(destinations=[{"name": "cc", "kind": "commcare-api", "base_url": "http://127.0.0.1:9",
                                "options": {"mapping": "mappings/commcare", "domian": "x"}}])  # fmt: skip


async def test_a_cht_outcome_the_facility_completes_in_two_steps_reaches_the_app_updated(
    sqlite_store: Store, sandbox: SourceSandbox, url: str
) -> None:
    """An EMR marks the Task completed, then adds the visit it recorded (same status): the report
    in CHT gets the visit. The second PUT met CouchDB's 409 for the outcome's id, which counted as
    a repeat, so the CHW never saw the visit date or the diagnosis."""
    context = _context("cht")
    with sqlite_store.transaction() as tx:
        for resource in (context["patient"], context["requester"], *context["outputs"]):
            tx.create(resource, rid=resource["id"])
    first = {key: value for key, value in context["task"].items() if key != "output"}
    connector = _cht_connector(sqlite_store, url)
    try:
        (sent,) = await connector.deliver([_job(first)])
        assert isinstance(sent, Success), sent
        (report,) = sandbox.cht.reports("referral_outcome")
        assert "visit_date" not in report["fields"]
        (updated,) = await connector.deliver([_job(context["task"])])
        assert isinstance(updated, Success), updated
        (report,) = sandbox.cht.reports("referral_outcome")  # still one report, now with the visit
        assert report["fields"]["visit_date"] and report["fields"]["diagnosis"]
        assert report["_rev"].startswith("2-")
        (repeat,) = await connector.deliver([_job(context["task"])])  # an answer lost: nothing new
        assert isinstance(repeat, Success) and "repeat" in (repeat.detail or "")
        assert sandbox.cht.reports("referral_outcome")[0]["_rev"] == report["_rev"]
    finally:
        await connector.aclose()


async def test_an_outcome_naming_a_visit_not_stored_yet_waits_for_it_a_little(
    sqlite_store: Store, sandbox: SourceSandbox, url: str
) -> None:
    """An EMR that PUTs the completed Task before it POSTs the Encounter and Condition: the outcome
    went out at once without the visit date and diagnosis, and nothing sent it again."""
    context = _context("cht")
    with sqlite_store.transaction() as tx:
        for resource in (context["patient"], context["requester"]):
            tx.create(resource, rid=resource["id"])
    connector = _cht_connector(sqlite_store, url)
    try:
        (waiting,) = await connector.deliver([_job(context["task"])])
        assert isinstance(waiting, Retry) and waiting.reason == "output_unknown" and waiting.link_ok
        assert waiting.delay is not None and waiting.delay <= 30
        assert sandbox.cht.reports("referral_outcome") == []
        with sqlite_store.transaction() as tx:
            _store_outputs(tx, context)
        retried = dataclasses.replace(_job(context["task"]), attempts=1)
        (sent,) = await connector.deliver([retried])
        assert isinstance(sent, Success), sent
        (report,) = sandbox.cht.reports("referral_outcome")
        assert report["fields"]["visit_date"] and report["fields"]["diagnosis"]
    finally:
        await connector.aclose()


async def test_an_outcome_whose_outputs_never_come_goes_without_them(
    sqlite_store: Store, sandbox: SourceSandbox, url: str
) -> None:
    # An EMR may name its own ids, which never reach the gateway: the outcome goes after a few tries.
    context = _context("cht")
    with sqlite_store.transaction() as tx:
        tx.create(context["patient"], rid=context["patient"]["id"])
    connector = _cht_connector(sqlite_store, url)
    try:
        (sent,) = await connector.deliver([dataclasses.replace(_job(context["task"]), attempts=3)])
        assert isinstance(sent, Success), sent
        (report,) = sandbox.cht.reports("referral_outcome")
        assert "visit_date" not in report["fields"]
    finally:
        await connector.aclose()


async def test_the_cht_connector_waits_for_the_patient_and_refuses_a_deleted_one(
    sqlite_store: Store, sandbox: SourceSandbox, url: str
) -> None:
    """A report without ``patient_uuid``/``patient_id`` is replicated to no CHW: it was sent (201),
    an outcome lost for good, when the referral's person record had not arrived yet."""
    context = _context("cht")
    connector = _cht_connector(sqlite_store, url)
    try:
        (waiting,) = await connector.deliver([_job(context["task"])])  # the Patient is not stored yet
        assert isinstance(waiting, Retry) and waiting.reason == "patient_unknown" and waiting.link_ok
        assert not sandbox.requests
        with sqlite_store.transaction() as tx:
            tx.create(context["patient"], rid=context["patient"]["id"])
            _store_outputs(tx, context)
        (sent,) = await connector.deliver([_job(context["task"])])
        assert isinstance(sent, Success), sent
        (report,) = sandbox.cht.reports("referral_outcome")
        assert report["fields"]["patient_uuid"] == "f6a5b4c3-d2e1-4f0a-9b8c-7d6e5f4a3b2c"
        with sqlite_store.transaction() as tx:
            tx.delete("Patient", context["patient"]["id"])
        (gone,) = await connector.deliver([_job({**context["task"], "status": "rejected"})])
        assert isinstance(gone, Permanent) and gone.reason == "patient_deleted"
    finally:
        await connector.aclose()


async def test_a_task_put_back_in_the_emrs_own_terms_still_reaches_the_chw(
    sqlite_store: Store, sandbox: SourceSandbox, url: str
) -> None:
    """An EMR that keeps the Task as OpenMRS holds it PUTs it back with its own patient id in
    ``for``, without ``meta``, ``focus`` (read-only ServiceRequest), ``requester`` (a Practitioner
    it never got) and the source's identifiers. The outcome was dropped as "a referral of another
    source": the version the source wrote says which app, patient, CHW and record it was."""
    context = _context("cht")
    with sqlite_store.transaction() as tx:
        for resource in (context["patient"], context["requester"], context["request"]):
            tx.create(resource, rid=resource["id"])
        tx.create({**context["task"], "status": "requested"}, rid=context["task"]["id"])  # as ingest wrote it
    openmrs = {key: value for key, value in context["task"].items()
               if key not in ("meta", "focus", "requester", "identifier", "output")}  # fmt: skip
    openmrs["for"] = {"reference": "Patient/70dfc959-86cc-4bb3-a8f4-e68a4b224768"}  # OpenMRS's patient uuid
    openmrs["identifier"] = [{"system": "http://fhir.openmrs.org/ext/task/identifier", "value": openmrs["id"]}]
    connector = _cht_connector(sqlite_store, url)
    try:
        (sent,) = await connector.deliver([_job(openmrs)])
        assert isinstance(sent, Success), sent
        (report,) = sandbox.cht.reports("referral_outcome")
        fields = report["fields"]
        assert fields["outcome"] == "completed" and fields["patient_uuid"] == "f6a5b4c3-d2e1-4f0a-9b8c-7d6e5f4a3b2c"
        assert fields["referral_report_id"] == "0196c7a2-5d3e-7b41-9f2a-6c8e1d4b3a21"
        assert report["contact"]["_id"]  # the CHW who referred
        foreign = {**openmrs, "id": "another-emr-task"}  # a Task the gateway never stored from a source
        (skipped,) = await connector.deliver([_job(foreign)])
        assert isinstance(skipped, Success) and len(sandbox.cht.reports("referral_outcome")) == 1
    finally:
        await connector.aclose()


async def test_an_outcome_the_facility_takes_back_leaves_the_chws_app(
    sqlite_store: Store, sandbox: SourceSandbox, url: str
) -> None:
    """A facility that recorded the outcome on the wrong referral marks the Task entered-in-error
    (or deletes it): the CHT reports it made are deleted, so the CHW's follow-up task goes. Both
    were skipped ("no outbound mapping fires", "nothing sent") and the CHW kept a wrong outcome."""
    context = _context("cht")
    task = context["task"]
    with sqlite_store.transaction() as tx:
        tx.create(context["patient"], rid=context["patient"]["id"])
        _store_outputs(tx, context)
        tx.create({**task, "status": "accepted"}, rid=task["id"])
        tx.update(task)  # completed
    connector = _cht_connector(sqlite_store, url)
    try:
        for status in ("accepted", "completed"):
            (sent,) = await connector.deliver([_job({**task, "status": status})])
            assert isinstance(sent, Success), sent
        assert len(sandbox.cht.reports("referral_outcome")) == 2
        with sqlite_store.transaction() as tx:
            tx.update({**task, "status": "entered-in-error"})
        (taken,) = await connector.deliver([_job({**task, "status": "entered-in-error"})])
        assert isinstance(taken, Success), taken
        assert sandbox.cht.reports("referral_outcome") == []
        (again,) = await connector.deliver([_job({**task, "status": "entered-in-error"})])  # a repeat
        assert isinstance(again, Success) and sandbox.cht.reports("referral_outcome") == []
    finally:
        await connector.aclose()


@pytest.mark.parametrize("how", ["entered-in-error", "deleted"])
async def test_an_outcome_the_facility_takes_back_is_called_off_in_commcare(
    sqlite_store: Store, sandbox: SourceSandbox, url: str, how: str
) -> None:
    """CommCare cannot delete a form through its receiver: the take-back was skipped ("nothing
    sent"), and the patient's case kept referral_status completed and the CHW's follow-up. The
    Task comes as entered-in-error, which the shipped mapping writes into the case."""
    context = _context("commcare")
    task, patient = context["task"], context["patient"]
    case = json.loads(sample("commcare", "tb-patient-case"))
    case_id = next(i["value"] for i in patient["identifier"] if i["system"].endswith(":case"))
    sandbox.commcare.put_case(DOMAIN, {**case, "case_id": case_id})
    with sqlite_store.transaction() as tx:
        tx.create(patient, rid=patient["id"])
        _store_outputs(tx, context)
        tx.create(task, rid=task["id"])  # completed
    connector = _connector(sqlite_store, "commcare-api", url, None)
    try:
        (sent,) = await connector.deliver([_job(task)])
        assert isinstance(sent, Success), sent
        assert sandbox.commcare.case(DOMAIN, case_id)["properties"]["referral_status"] == "completed"  # type: ignore[index]
        with sqlite_store.transaction() as tx:
            if how == "deleted":
                tx.delete("Task", task["id"])
            else:
                tx.update({**task, "status": "entered-in-error"})
        job = _job(task, op="delete") if how == "deleted" else _job({**task, "status": "entered-in-error"})
        (taken,) = await connector.deliver([job])
        assert isinstance(taken, Success), taken
        properties = sandbox.commcare.case(DOMAIN, case_id)["properties"]  # type: ignore[index]
        assert (properties["referral_status"], properties["referral_follow_up"]) == ("entered-in-error", "no")
        forms = [f for f in sandbox.commcare.forms[DOMAIN] if f["form"].get("referral_task_id") == task["id"]]
        assert [f["form"]["outcome"] for f in forms] == ["completed", "entered-in-error"]
        (again,) = await connector.deliver([job])  # a repeat: the same instanceID, the same form
        assert isinstance(again, Success)
        assert len([f for f in sandbox.commcare.forms[DOMAIN] if f["form"].get("referral_task_id") == task["id"]]) == 2
    finally:
        await connector.aclose()


async def test_a_task_taken_back_before_any_outcome_sends_nothing_to_commcare(
    sqlite_store: Store, sandbox: SourceSandbox, url: str
) -> None:
    context = _context("commcare")
    task = {**context["task"], "status": "requested"}
    with sqlite_store.transaction() as tx:
        tx.create(context["patient"], rid=context["patient"]["id"])
        tx.create(task, rid=task["id"])
        tx.update({**task, "status": "entered-in-error"})
    connector = _connector(sqlite_store, "commcare-api", url, None)
    try:
        (taken,) = await connector.deliver([_job({**task, "status": "entered-in-error"})])
        assert isinstance(taken, Success) and "nothing sent" in (taken.detail or "")
        assert sandbox.commcare.forms.get(DOMAIN, []) == []
    finally:
        await connector.aclose()


async def test_an_identity_review_task_is_not_a_referral_outcome(
    sqlite_store: Store, sandbox: SourceSandbox, url: str
) -> None:
    """A reviewer's decision completes (or rejects) an identity review Task: no meta.source, its
    focus a Patient. The focus was read as the referral's ServiceRequest, whose meta.source (the
    CHT Patient's) made it this app's: a "completed" referral_outcome went to the CHW."""
    from gateway.identity import review_task_id

    context = _context("cht")
    other = {**context["patient"], "id": "second-record"}
    with sqlite_store.transaction() as tx:
        tx.create(context["patient"], rid=context["patient"]["id"])
        tx.create(other, rid=other["id"])
    pid = context["patient"]["id"]
    review = {
        "resourceType": "Task", "id": review_task_id(pid, other["id"]), "status": "completed", "intent": "proposal",
        "code": {"coding": [{"system": "urn:chw-gateway:task", "code": "identity-review"}]},
        "for": {"reference": f"Patient/{pid}"}, "focus": {"reference": f"Patient/{other['id']}"},
    }  # fmt: skip
    connector = _cht_connector(sqlite_store, url)
    try:
        outcomes = await connector.deliver([_job(review), _job({**review, "status": "rejected"})])
        assert all(isinstance(outcome, Success) for outcome in outcomes), outcomes
        assert sandbox.cht.reports("referral_outcome") == [] and not sandbox.requests
    finally:
        await connector.aclose()
