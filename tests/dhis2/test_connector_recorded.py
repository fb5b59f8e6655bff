"""Outcome classification against recorded DHIS2 answers (respx), one case per outcome kind."""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson
import pytest
import respx

from gateway.clock import ManualClock
from gateway.connectors.base import DeliveryOutcome, Partial, Permanent, Retry, Success
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.config import Dhis2Options
from gateway.connectors.dhis2.connector import Dhis2Connector
from gateway.connectors.dhis2.sources import ResourceBundle
from tests.dhis2.conftest import MAPPINGS, demo_snapshot, make_job
from tests.dhis2.records import chw_record, places
from tests.dhis2.samples import load_sample

BASE = "https://dhis2.test"


SNAPSHOT = demo_snapshot(BASE)


def connector(source: ResourceBundle, **options: Any) -> Dhis2Connector:
    settings = Dhis2Options(
        mapping=MAPPINGS / "dhis2" / "chw-household-visit.yaml",
        aggregate_mapping=MAPPINGS / "dhis2" / "chw-monthly-report.yaml",
        uid_namespace="recorded",
        **options,
    )
    return Dhis2Connector(
        Dhis2Client(BASE), settings, source, ManualClock(), mappings_root=MAPPINGS, snapshot=SNAPSHOT
    )


def visits(n: int) -> tuple[ResourceBundle, list[Any]]:
    resources = places() + [r for i in range(n) for r in chw_record(i)]
    return ResourceBundle(resources), [make_job(r) for r in resources if r["resourceType"] == "Encounter"]


def substitute(sample: Any, replacements: dict[str, str]) -> Any:
    text = json.dumps(sample)
    for old, new in replacements.items():
        text = text.replace(old, new)
    return json.loads(text)


def planned(request: httpx.Request) -> dict[str, list[str]]:
    body = orjson.loads(request.content)
    return {
        "te": [te["trackedEntity"] for te in body["trackedEntities"]],
        "en": [en["enrollment"] for en in body["enrollments"]],
        "ev": [ev["event"] for ev in body["events"]],
    }


async def deliver(conn: Dhis2Connector, jobs: list[Any]) -> list[DeliveryOutcome]:
    try:
        return await conn.deliver(jobs)
    finally:
        await conn.aclose()


@respx.mock(base_url=BASE, assert_all_called=True)
async def test_recorded_full_success(respx_mock: respx.MockRouter) -> None:
    source, jobs = visits(1)

    def answer(request: httpx.Request) -> httpx.Response:
        ids = planned(request)
        assert request.url.params["atomicMode"] == "OBJECT" and request.url.params["async"] == "false"
        assert request.url.params["importStrategy"] == "CREATE_AND_UPDATE"
        sample = load_sample("tracker-import-report-full-success-docs.json")
        return httpx.Response(
            200,
            json=substitute(
                sample,
                {"aVcGf9iO8Xp": ids["te"][0], "ffcvJvWjiNZ": ids["en"][0], "gTZBPT3Jq39": ids["ev"][0]},
            ),
        )

    respx_mock.post("/api/tracker").mock(side_effect=answer)
    outcomes = await deliver(connector(source), jobs)
    assert (
        isinstance(outcomes[0], Success) and outcomes[0].detail is not None and "EVENT" in outcomes[0].detail
    )


@respx.mock(base_url=BASE, assert_all_called=True)
async def test_recorded_409_with_e_codes_per_event(respx_mock: respx.MockRouter) -> None:
    source, jobs = visits(3)

    def answer(request: httpx.Request) -> httpx.Response:
        ids = planned(request)["ev"]
        sample = load_sample("tracker-import-409-E1029-three-events.json")
        return httpx.Response(
            409, json=substitute(sample, {"event1Id": ids[0], "event2Id": ids[1], "event3Id": ids[2]})
        )

    respx_mock.post("/api/tracker").mock(side_effect=answer)
    outcomes = await deliver(connector(source), jobs)
    for index, outcome in enumerate(outcomes):
        assert isinstance(outcome, Permanent) and outcome.reason == "dhis2_E1029"
        assert outcome.detail is not None and f"FHIR Encounter/enc-{index}" in outcome.detail
        assert "dont match" in outcome.detail
        assert outcome.response is not None and "E1029" in outcome.response.body


@respx.mock(base_url=BASE, assert_all_called=True)
async def test_recorded_atomic_all_rejection_names_the_parent(respx_mock: respx.MockRouter) -> None:
    source, jobs = visits(1)

    def answer(request: httpx.Request) -> httpx.Response:
        sample = load_sample("tracker-import-409-E1041-enrollment-orgunit-program.json")
        return httpx.Response(409, json=substitute(sample, {"XJPm2lZzxtq": planned(request)["en"][0]}))

    respx_mock.post("/api/tracker").mock(side_effect=answer)
    outcome = (await deliver(connector(source), jobs))[0]
    assert isinstance(outcome, Permanent) and outcome.reason == "dhis2_E1041"
    assert outcome.detail is not None and "FHIR Patient/pt-0" in outcome.detail


@respx.mock(base_url=BASE, assert_all_called=True)
async def test_recorded_async_job_flow(respx_mock: respx.MockRouter) -> None:
    source, jobs = visits(2)
    added = load_sample("tracker-import-async-job-added-2.38.json")
    job = added["response"]["id"]
    events: list[str] = []

    def submit(request: httpx.Request) -> httpx.Response:
        assert request.url.params["async"] == "true"
        events.extend(planned(request)["ev"])
        return httpx.Response(200, json=added)

    def report(request: httpx.Request) -> httpx.Response:
        sample = load_sample("tracker-job-report-error-E1033.json")
        return httpx.Response(200, json=substitute(sample, {"PXi7gfVIk1p": events[1]}))

    respx_mock.post("/api/tracker").mock(side_effect=submit)
    notes = load_sample("tracker-job-notifications-completed.json")
    respx_mock.get(f"/api/tracker/jobs/{job}").mock(
        side_effect=[httpx.Response(200, json=notes[2:]), httpx.Response(200, json=notes)]
    )
    respx_mock.get(f"/api/tracker/jobs/{job}/report").mock(side_effect=report)
    conn = connector(source, async_threshold=1, job_poll_interval=0.01)
    clock = conn.clock
    assert isinstance(clock, ManualClock)

    async def no_wait(seconds: float) -> None:
        return None

    conn.clock = type("Instant", (), {"now": clock.now, "sleep": staticmethod(no_wait)})()
    outcomes = await deliver(conn, jobs)
    assert isinstance(outcomes[1], Permanent) and outcomes[1].reason == "dhis2_E1033"
    # The report has no bundleReport: the other event was not committed either.
    assert isinstance(outcomes[0], Retry) and outcomes[0].reason == "dhis2_not_committed"


@respx.mock(base_url=BASE)
async def test_vanished_job_is_retried(respx_mock: respx.MockRouter) -> None:
    source, jobs = visits(1)
    added = load_sample("tracker-import-async-job-added-docs.json")
    respx_mock.post("/api/tracker").mock(return_value=httpx.Response(200, json=added))
    respx_mock.get(f"/api/tracker/jobs/{added['response']['id']}").mock(
        return_value=httpx.Response(404, json=load_sample("DERIVED-tracker-job-report-404.json"))
    )
    outcome = (await deliver(connector(source, async_threshold=1), jobs))[0]
    assert isinstance(outcome, Retry) and outcome.reason == "dhis2_job_lost"


@pytest.mark.parametrize(
    ("response", "expected", "reason"),
    [
        (
            httpx.Response(401, json=load_sample("DERIVED-webmessage-401-unauthorized.json")),
            Permanent,
            "http_401",
        ),
        (httpx.Response(403, json=load_sample("webmessage-403-forbidden-docs.json")), Permanent, "http_403"),
        (
            httpx.Response(403, json=load_sample("webmessage-403-ownership-denied.json")),
            Permanent,
            "http_403",
        ),
        (
            httpx.Response(502, text="<html><center><h1>502 Bad Gateway</h1></center></html>"),
            Retry,
            "http_502",
        ),
        (httpx.Response(504, text="<html>504 Gateway Time-out</html>"), Retry, "http_504"),
        (httpx.Response(500, json={"httpStatusCode": 500, "status": "ERROR"}), Retry, "http_500"),
        (httpx.Response(503, headers={"Retry-After": "120"}), Retry, "http_503"),
        (httpx.ConnectError("refused"), Retry, "connection"),
        (httpx.ReadTimeout("slow"), Retry, "timeout"),
        (httpx.Response(200, text="<html>login</html>"), Permanent, "dhis2_unexpected_response"),
        # An answer lost on the way (empty, or JSON cut off) is no refusal: sent again, as UIDs are stable.
        (httpx.Response(200, content=b""), Retry, "dhis2_answer_cut_short"),
        (httpx.Response(200, content=b'{"status": "OK", "bundleRe', headers={"Content-Type": "application/json"}),
         Retry, "dhis2_answer_cut_short"),
    ],
)
async def test_transport_and_http_failures(response: Any, expected: type, reason: str) -> None:
    source, jobs = visits(2)
    with respx.mock(base_url=BASE) as mock:
        mock.post("/api/tracker").mock(side_effect=[response])
        outcomes = await deliver(connector(source), jobs)
    assert [type(o) for o in outcomes] == [expected, expected]
    assert all(isinstance(o, Retry | Permanent) and o.reason == reason for o in outcomes)
    if reason == "http_401":
        permanent = outcomes[0]
        assert isinstance(permanent, Permanent) and permanent.response is not None
        assert permanent.request is not None and "authorization" not in {
            k for k, v in permanent.request.headers.items() if v != "[redacted]"
        }
    if reason == "http_503":
        assert isinstance(outcomes[0], Retry) and outcomes[0].delay == 120 and outcomes[0].throttle


def monthly_report() -> dict[str, Any]:
    return {
        "resourceType": "MeasureReport",
        "id": "may",
        "status": "complete",
        "type": "summary",
        "measure": "urn:chw-gateway:Measure:chw-monthly-report",
        "reporter": {
            "identifier": {"system": "https://demo.chw.org/fhir/sid/facility-code", "value": "CU-001"}
        },
        "period": {"start": "2024-05-01", "end": "2024-05-31"},
        "group": [
            {
                "code": {
                    "coding": [
                        {"system": "urn:chw-gateway:CodeSystem:chw-indicators", "code": "households-visited"}
                    ]
                },
                "measureScore": {"value": 14},
            },
            {
                "code": {
                    "coding": [{"system": "urn:chw-gateway:CodeSystem:chw-indicators", "code": "referrals"}]
                },
                "stratifier": [
                    {
                        "code": [
                            {
                                "coding": [
                                    {
                                        "system": "urn:chw-gateway:CodeSystem:chw-stratifiers",
                                        "code": "age-group",
                                    }
                                ]
                            }
                        ],
                        "stratum": [
                            {"value": {"coding": [{"code": "under-5"}]}, "measureScore": {"value": 3}},
                            {"value": {"coding": [{"code": "5-plus"}]}, "measureScore": {"value": 1}},
                        ],
                    }
                ],
            },
        ],
    }


async def send_report(report: dict[str, Any], status: int, body: Any) -> tuple[DeliveryOutcome, dict[str, Any]]:
    """Deliver one MeasureReport against a recorded answer; the outcome and the data value set sent."""
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/api/dataValueSets").mock(return_value=httpx.Response(status, json=body))
        outcome = (await deliver(connector(ResourceBundle()), [make_job(report)]))[0]
    return outcome, orjson.loads(route.calls[0].request.content)


async def test_recorded_aggregate_success() -> None:
    outcome, sent = await send_report(monthly_report(), 200, load_sample("datavalueset-200-success.json"))
    data_set = SNAPSHOT.by_code("dataSets", "CHW_MONTHLY")
    assert data_set is not None
    assert (sent["period"], sent["dataSet"], len(sent["dataValues"])) == ("202405", data_set["id"], 3)
    assert isinstance(outcome, Success)


async def test_an_aggregate_answer_cut_short_is_sent_again_and_an_html_page_is_a_dead_letter() -> None:
    for answer, expected, reason in (
        (httpx.Response(200, content=b""), Retry, "dhis2_answer_cut_short"),
        (httpx.Response(200, content=b'{"status": "SUCC', headers={"Content-Type": "application/json"}), Retry,
         "dhis2_answer_cut_short"),
        (httpx.Response(200, text="<html>login</html>"), Permanent, "dhis2_unexpected_response"),
    ):
        with respx.mock(base_url=BASE) as mock:
            mock.post("/api/dataValueSets").mock(return_value=answer)
            outcome = (await deliver(connector(ResourceBundle()), [make_job(monthly_report())]))[0]
        assert isinstance(outcome, expected) and outcome.reason == reason, outcome


@pytest.mark.parametrize(
    ("sample", "code", "named"),
    [
        ("datavalueset-409-warning-E7610-dataelement-2.40.json", "E7610", "INVALID_1"),
        ("datavalueset-409-warning-E7612-orgunit-2.40.json", "E7612", "INVALID_1_OU"),
    ],
)
async def test_an_aggregate_warning_is_one_dead_letter_per_refused_value(
    sample: str, code: str, named: str
) -> None:
    outcome, sent = await send_report(monthly_report(), 409, load_sample(sample))
    # The household count (#0) was stored; both referral strata (#1, #2) were refused.
    assert isinstance(outcome, Partial) and outcome.detail is not None and "1 of 3 values stored" in outcome.detail
    assert [part.part for part in outcome.refused] == ["v1", "v2"]
    first = outcome.refused[0]
    assert first.reason == f"dhis2_{code}" and first.detail is not None
    under5 = sent["dataValues"][1]
    assert f"{code} " in first.detail and named in first.detail
    assert f"dataElement {under5['dataElement']}, categoryOptionCombo {under5['categoryOptionCombo']}" in first.detail
    assert f"period 202405, orgUnit {sent['orgUnit']}" in first.detail
    group = "urn:chw-gateway:CodeSystem:chw-indicators|referrals"
    assert f"value #1 of FHIR MeasureReport/may group {group}" in first.detail
    assert first.response is not None and first.response.status == 409
    answer = orjson.loads(first.response.body)
    assert answer["conflicts"][0]["errorCode"] == code and answer["dataValue"] == under5
    # What replaying that dead letter sends: the report narrowed to that one value.
    narrowed = orjson.loads(first.payload)
    assert narrowed["id"] == "may" and len(narrowed["group"]) == 1
    ok = load_sample("datavalueset-200-success.json")
    again, resent = await send_report(narrowed, 200, ok)
    assert isinstance(again, Success) and resent["dataValues"] == [under5]


async def test_a_refused_single_value_is_a_plain_dead_letter() -> None:
    sample = "datavalueset-409-warning-E7610-dataelement-2.40.json"
    split, _ = await send_report(monthly_report(), 409, load_sample(sample))
    assert isinstance(split, Partial)
    narrowed = orjson.loads(split.refused[1].payload)
    body = load_sample(sample)
    body["response"]["conflicts"] = [{**body["response"]["conflicts"][0], "indexes": [0]}]
    body["response"]["rejectedIndexes"] = [0]
    outcome, sent = await send_report(narrowed, 409, body)
    assert len(sent["dataValues"]) == 1
    assert isinstance(outcome, Permanent) and outcome.reason == "dhis2_E7610"
    assert outcome.detail is not None and "value #0 of FHIR MeasureReport/may" in outcome.detail


async def test_pre_239_conflicts_are_traced_to_values_by_their_object() -> None:
    # Before 2.39 a conflict is {object, value}: no code, no indexes. Its object is matched
    # against the values sent; here "3" is the under-5 referral count.
    body = substitute(load_sample("datavalueset-409-warning-conflict-old-format.json"), {'"40L"': '"3"'})
    outcome, sent = await send_report(monthly_report(), 409, body)
    assert isinstance(outcome, Partial) and [part.part for part in outcome.refused] == ["v1"]
    assert outcome.refused[0].reason == "dhis2_conflict"
    assert outcome.refused[0].detail is not None
    assert outcome.refused[0].detail.startswith("Data value is not a positive integer")


async def test_a_conflict_no_value_can_be_traced_to_keeps_the_report_whole() -> None:
    outcome, _ = await send_report(
        monthly_report(), 409, load_sample("datavalueset-409-warning-conflict-old-format.json")
    )
    assert isinstance(outcome, Permanent) and outcome.reason == "dhis2_conflict"
    assert outcome.detail is not None and "must match data element type" in outcome.detail


async def test_aggregate_error_aborts_the_report() -> None:
    body = load_sample("datavalueset-409-warning-E7610-dataelement-2.40.json")
    body["status"] = body["response"]["status"] = "ERROR"
    body["response"]["conflicts"] = [
        {
            "object": "x",
            "value": "Data set not found or not accessible: `x`",
            "errorCode": "E7600",
            "property": "dataSet",
            "indexes": [],
        }
    ]
    with respx.mock(base_url=BASE) as mock:
        mock.post("/api/dataValueSets").mock(return_value=httpx.Response(409, json=body))
        outcome = (await deliver(connector(ResourceBundle()), [make_job(monthly_report())]))[0]
    assert isinstance(outcome, Permanent) and outcome.reason == "dhis2_E7600"


async def test_an_aggregate_import_that_failed_inside_dhis2_is_sent_again() -> None:
    """ERROR without conflicts: DHIS2 caught an exception mid-import (its 500 in an ImportSummary),
    nothing about the values: retried, not a dead letter."""
    body = load_sample("datavalueset-409-warning-E7610-dataelement-2.40.json")
    body["status"] = body["response"]["status"] = "ERROR"
    body["response"]["conflicts"] = []
    body["response"].pop("rejectedIndexes", None)
    body["response"]["description"] = "The import process failed: could not obtain lock"
    outcome, _ = await send_report(monthly_report(), 409, body)
    assert isinstance(outcome, Retry) and outcome.reason == "dhis2_import_failed", outcome


async def test_reports_of_other_measures_and_other_resources_are_skipped() -> None:
    other = {**monthly_report(), "measure": "urn:other"}
    location = places()[0]
    with respx.mock(base_url=BASE, assert_all_mocked=True):
        outcomes = await deliver(connector(ResourceBundle()), [make_job(other), make_job(location)])
    assert all(isinstance(o, Success) and o.detail for o in outcomes)


@pytest.mark.parametrize(
    ("answer", "kind", "reason"),
    [
        (
            httpx.Response(200, json={**load_sample("system-info-response.json"), "version": "2.37.9"}),
            Permanent,
            "dhis2_setup",
        ),
        (httpx.Response(503), Retry, "http_503"),
        (httpx.ConnectError("refused"), Retry, "connection"),
    ],
)
async def test_setup_needs_a_supported_reachable_dhis2(answer: Any, kind: type, reason: str) -> None:
    source, jobs = visits(1)
    settings = Dhis2Options(mapping=MAPPINGS / "dhis2" / "chw-household-visit.yaml")
    conn = Dhis2Connector(Dhis2Client(BASE), settings, source, ManualClock(), mappings_root=MAPPINGS)
    with respx.mock(base_url=BASE) as mock:
        mock.get("/api/system/info").mock(side_effect=[answer])
        outcome = (await deliver(conn, jobs))[0]
    assert isinstance(outcome, kind) and isinstance(outcome, Retry | Permanent) and outcome.reason == reason
