"""Parsing recorded DHIS2 import reports and summaries into per-object outcomes."""

from __future__ import annotations

import pytest

from gateway.connectors.dhis2.aggregate_summary import parse_import_summary
from gateway.connectors.dhis2.errors import Dhis2ProtocolError
from gateway.connectors.dhis2.reports import (
    ErrorReport,
    ObjectState,
    TrackerReport,
    job_completed,
    job_id_of,
    parse_tracker_report,
)
from tests.dhis2.samples import load_sample


def test_full_success_accepts_every_object() -> None:
    report = parse_tracker_report(load_sample("tracker-import-report-full-success-docs.json"))
    assert report.committed and report.status == "OK"
    assert report.state_of("TRACKED_ENTITY", "aVcGf9iO8Xp") is ObjectState.ACCEPTED
    assert report.state_of("ENROLLMENT", "ffcvJvWjiNZ") is ObjectState.ACCEPTED
    assert report.state_of("EVENT", "gTZBPT3Jq39") is ObjectState.ACCEPTED
    assert report.state_of("EVENT", "Xxxxxxxxxx1") is ObjectState.UNREPORTED


@pytest.mark.parametrize(
    "name",
    ["tracker-import-200-ok-te-created-2.38shape.json", "tracker-import-200-ok-event-created-2.38shape.json"],
)
def test_238_shapes_parse(name: str) -> None:
    report = parse_tracker_report(load_sample(name))
    assert len(report.accepted) == 1 and report.stats["created"] == 1


def test_atomic_all_rejection_leaves_valid_objects_uncommitted() -> None:
    report = parse_tracker_report(load_sample("tracker-import-409-E1041-enrollment-orgunit-program.json"))
    assert not report.committed and report.stats["ignored"] == 2
    assert report.state_of("ENROLLMENT", "XJPm2lZzxtq") is ObjectState.REJECTED
    assert report.errors_for("ENROLLMENT", "XJPm2lZzxtq")[0].code == "E1041"
    assert report.state_of("TRACKED_ENTITY", "anything") is ObjectState.NOT_COMMITTED


def test_each_event_error_belongs_to_its_event() -> None:
    report = parse_tracker_report(load_sample("tracker-import-409-E1029-three-events.json"))
    causes = [report.root_cause("EVENT", f"event{i}Id") for i in (1, 2, 3)]
    assert [cause.code if cause else None for cause in causes] == ["E1029"] * 3


def test_job_reports_parse() -> None:
    error = parse_tracker_report(load_sample("tracker-job-report-error-E1033.json"))
    assert error.errors == (
        ErrorReport("E1033", "Event: `PXi7gfVIk1p`, Enrollment value is NULL.", "EVENT", "PXi7gfVIk1p"),
    )
    mixed = parse_tracker_report(load_sample("tracker-job-report-ok-mixed-stats.json"))
    assert mixed.state_of("EVENT", "UavzrupW3lZ") is ObjectState.ACCEPTED
    assert mixed.stats == {"created": 1, "updated": 2, "deleted": 3, "ignored": 4, "total": 10}


def test_e5000_root_cause_is_the_parents_error() -> None:
    report = TrackerReport(
        status="ERROR",
        errors=(
            ErrorReport("E1090", "Attribute: `a`, is mandatory …", "TRACKED_ENTITY", "te1"),
            ErrorReport(
                "E5000",
                '"enrollment" `en1` cannot be persisted because "trackedEntity" `te1` '
                "referenced by it cannot be persisted.",
                "ENROLLMENT",
                "en1",
            ),
            ErrorReport(
                "E5000",
                '"event" `ev1` cannot be persisted because "enrollment" `en1` '
                "referenced by it cannot be persisted.",
                "EVENT",
                "ev1",
            ),
        ),
        accepted=frozenset(),
        committed=True,
        stats={},
    )
    cause = report.root_cause("EVENT", "ev1")
    assert cause is not None and (cause.code, cause.uid) == ("E1090", "te1")
    assert report.root_cause("EVENT", "other") is None


def test_not_a_report() -> None:
    with pytest.raises(Dhis2ProtocolError):
        parse_tracker_report(load_sample("DERIVED-webmessage-401-unauthorized.json"))


def test_async_job_answers() -> None:
    assert job_id_of(load_sample("tracker-import-async-job-added-docs.json")) == "cHh2OCTJvRw"
    assert job_id_of(load_sample("tracker-import-async-job-added-2.38.json")) == "LkXBUdIgbe3"
    assert job_completed(load_sample("tracker-job-notifications-completed.json"))
    running = load_sample("tracker-job-notifications-completed.json")[1:]
    assert not job_completed(running)
    with pytest.raises(Dhis2ProtocolError):
        job_id_of({"httpStatus": "OK"})


def test_aggregate_success_and_bare_summaries() -> None:
    values = [{"dataElement": "f7n9E0hX8qk", "value": "1"}]
    ok = parse_import_summary(load_sample("datavalueset-200-success.json"), values)
    assert (ok.status, ok.updated, ok.rejected) == ("SUCCESS", 3, frozenset())
    bare = parse_import_summary(load_sample("system-task-summary-datavalue-import-docs.json"), values)
    assert bare.updated == 431


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("datavalueset-409-warning-E7610-dataelement-2.40.json", "E7610"),
        ("datavalueset-409-warning-E7612-orgunit-2.40.json", "E7612"),
    ],
)
def test_aggregate_warning_is_partial_success(name: str, code: str) -> None:
    summary = parse_import_summary(load_sample(name), [{}, {}, {}])
    assert summary.status == "WARNING" and not summary.aborted
    assert summary.rejected == {1, 2} and summary.imported == 1
    assert [c.code for c in summary.conflicts_for(2)] == [code]
    assert summary.conflicts_for(0) == []


def test_old_conflicts_are_attributed_by_their_object() -> None:
    values = [{"dataElement": "a", "value": "1"}, {"dataElement": "vANAXwtLwcT", "value": "40L"}]
    summary = parse_import_summary(load_sample("datavalueset-409-warning-conflict-old-format.json"), values)
    assert summary.rejected == {1}
    assert summary.conflicts_for(1)[0].message.startswith("Data value is not a positive integer")
