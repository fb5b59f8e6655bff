"""Pulling ODK Central's OData feed: the shared samples, paging, edits, reviews, deletions, failures."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import source_sandbox
from gateway.pull import PullAuthError, PullError
from source_sandbox import odk_sample_rows
from tests.pull.conftest import ENVIRON, ODK_FORM, ODK_PROJECT, PullHarness, odk_household, pulled_sources


def _submit(pulls: PullHarness, *rows: dict[str, Any]) -> None:
    for row in rows:
        pulls.sandbox.odk.submit(ODK_PROJECT, ODK_FORM, row)


def _served(pulls: PullHarness, instance_id: str) -> dict[str, Any]:
    """The submission as the server holds it now."""
    return copy.deepcopy(next(r for r in pulls.sandbox.odk.forms[(ODK_PROJECT, ODK_FORM)] if r["__id"] == instance_id))


async def test_the_shared_odata_samples_ingest_without_quarantine(pulls: PullHarness) -> None:
    sample = odk_sample_rows()[0]
    _submit(pulls, sample)
    report = await pulls.runner.pull("odk")
    assert (report.records, report.stored, report.quarantined) == (1, 1, 0)
    assert pulls.store.quarantine_list(source="odk") == []
    made = pulls.produced("odk", sample)
    patients = [rid for rtype, rid in made if rtype == "Patient"]
    assert len(patients) == 2  # one per repeat row: $expand=* brought the members inline
    names = sorted(pulls.read("Patient", rid)["name"][0]["text"] for rid in patients)  # type: ignore[index]
    assert names == ["Brian Okello", "Sarah Atim"]
    assert all(pulls.read(rtype, rid) is not None for rtype, rid in made)
    (asked,) = pulls.requests("odk")[:1]
    assert asked["$expand"] == "*" and asked["$orderby"] == "__system/submissionDate asc"


async def test_pages_follow_the_next_link_and_the_cursor_is_saved(pulls: PullHarness) -> None:
    _submit(pulls, *(odk_household(n) for n in range(5)))
    report = await pulls.runner.pull("odk")
    assert (report.records, report.stored, report.quarantined) == (5, 5, 0)
    submitted = [q for q in pulls.requests("odk") if "submissionDate" in q.get("$orderby", "")
                 or "$skiptoken" in q]  # fmt: skip
    assert len(submitted) == 3 and sum("$skiptoken" in q for q in submitted) == 2
    cursor = pulls.store.pull_cursor("odk")
    assert cursor is not None and max(r["__system"]["submissionDate"]
                                      for r in pulls.sandbox.odk.forms[(ODK_PROJECT, ODK_FORM)]) in cursor
    # Nothing new: the next pull reads from the cursor and writes nothing.
    before = len(pulls.requests("odk"))
    again = await pulls.runner.pull("odk")
    assert again.stored == 0 and again.quarantined == 0
    newest = max(r["__system"]["submissionDate"] for r in pulls.sandbox.odk.forms[(ODK_PROJECT, ODK_FORM)])
    assert pulls.requests("odk")[before]["$filter"] == f"__system/submissionDate ge {newest}"


async def test_a_submission_edited_between_two_pulls_is_ingested_again(pulls: PullHarness) -> None:
    _submit(pulls, odk_household(0), odk_household(1))
    await pulls.runner.pull("odk")
    sample_id = odk_sample_rows()[0]["__id"]

    def rename(row: dict[str, Any]) -> None:
        row["household"]["member"][0]["member_name"] = "Sarah Atim Nambi"

    pulls.sandbox.odk.edit(ODK_PROJECT, ODK_FORM, sample_id, rename)
    report = await pulls.runner.pull("odk")
    assert report.stored == 1 and report.quarantined == 0
    edited = next(r for r in pulls.sandbox.odk.forms[(ODK_PROJECT, ODK_FORM)] if r["__id"] == sample_id)
    patient = next(rid for rtype, rid in pulls.produced("odk", edited) if rtype == "Patient")
    stored = pulls.store.read("Patient", patient)
    assert stored is not None and stored.version == 2
    assert pulls.read("Patient", patient)["name"][0]["text"] == "Sarah Atim Nambi"  # type: ignore[index]


@pytest.mark.parametrize("how", ["delete", "reject"])
async def test_a_deleted_or_rejected_submission_is_taken_back(pulls: PullHarness, how: str) -> None:
    _submit(pulls, odk_household(0), odk_household(1))
    await pulls.runner.pull("odk")
    gone = _served(pulls, odk_household(1)["__id"])
    made = pulls.produced("odk", gone)
    patients = [rid for rtype, rid in made if rtype == "Patient"]
    assert all(pulls.read("Patient", rid) is not None for rid in patients)
    if how == "delete":
        pulls.sandbox.odk.delete(ODK_PROJECT, ODK_FORM, gone["__id"])
    else:
        pulls.sandbox.odk.review(ODK_PROJECT, ODK_FORM, gone["__id"], "rejected")
    report = await pulls.runner.pull("odk")
    assert report.deleted >= 1 and report.quarantined == 0  # the boundary row may be read twice (ge)
    assert all(pulls.read("Patient", rid) is None for rid in patients)
    kept = [rid for rtype, rid in pulls.produced("odk", _served(pulls, odk_household(0)["__id"])) if rtype == "Patient"]
    assert all(pulls.read("Patient", rid) is not None for rid in kept)


async def test_429_and_503_wait_as_the_retry_policy_says_honouring_retry_after(pulls: PullHarness) -> None:
    _submit(pulls, odk_household(0))
    pulls.sandbox.fail_next("odk", 429, retry_after="7")
    pulls.sandbox.fail_next("odk", 503)
    report = await pulls.runner.pull("odk")
    assert report.stored == 1 and report.retries == 2
    first, second = pulls.sleeps.waits
    assert first >= 7.0  # Retry-After is a floor
    assert 0 < second <= 60.0


async def test_a_source_that_keeps_failing_ends_the_pull_without_moving_the_cursor(pulls: PullHarness) -> None:
    _submit(pulls, odk_household(0))
    pulls.sandbox.fail_next("odk", 500, times=6)
    with pytest.raises(PullError, match="gave up after 6 attempts: .* answered 500"):
        await pulls.runner.pull("odk")
    assert pulls.store.pull_cursor("odk") is None


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_end_the_pull_with_a_clear_error(
    sandbox: Any, served: str, store: Any, status: int
) -> None:
    harness = PullHarness(sandbox, served, store, pulled_sources(served, secret="WRONG" if status == 401 else None))
    try:
        _submit(harness, odk_household(0))
        if status == 403:
            sandbox.forbidden.add("odk")
        with pytest.raises(PullAuthError, match=f"answered {status}: the credentials were refused; check pull.auth"):
            await harness.runner.pull("odk")
        assert len(harness.requests("odk")) == 1  # no retry: it would not help
        assert ENVIRON["ODK_PASSWORD"] not in str(harness.sleeps.waits)
        assert store.pull_cursor("odk") is None
    finally:
        harness.ingest.close()


async def test_after_a_crash_the_pull_resumes_from_the_last_stored_page(pulls: PullHarness) -> None:
    _submit(pulls, *(odk_household(n) for n in range(1, 6)))
    # The first page is stored, then the source fails for good (the process "crashes" mid-pull).
    original = pulls.runner._store_page
    calls = 0

    def crash_on_second_page(*args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("process killed")
        original(*args)

    pulls.runner._store_page = crash_on_second_page  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        await pulls.runner.pull("odk")
    pulls.runner._store_page = original  # type: ignore[method-assign]
    rows = sorted(pulls.sandbox.odk.forms[(ODK_PROJECT, ODK_FORM)], key=lambda r: r["__system"]["submissionDate"])
    saved = pulls.store.pull_cursor("odk")
    assert saved is not None and rows[1]["__system"]["submissionDate"] in saved  # page 1 (2 records), no further
    assert all(pulls.read(t, i) is None for t, i in pulls.produced("odk", rows[2]) if t == "Patient")
    report = await pulls.runner.pull("odk")
    assert report.quarantined == 0 and report.stored == 3  # rows 3-5; row 2 (the boundary) unchanged
    for row in rows:
        assert all(pulls.read(t, i) is not None for t, i in pulls.produced("odk", row))


async def test_since_starts_from_a_given_time_instead_of_the_cursor(pulls: PullHarness) -> None:
    _submit(pulls, odk_household(0), odk_household(1))
    report = await pulls.runner.pull("odk", since="2025-06-01T00:00:00.000Z")
    assert report.records == 1  # the sample (2025-05-12) is older
    assert pulls.requests("odk")[0]["$filter"] == "__system/submissionDate ge 2025-06-01T00:00:00.000Z"


async def test_the_stand_in_answers_as_the_shared_samples_show(pulls: PullHarness) -> None:
    """The stand-in is judged too: without $expand it serves the default sample, with it the expanded one."""
    import httpx

    samples = Path(source_sandbox.__file__).parent / "samples"
    default = json.loads((samples / "odk-central-odata-submissions-default.json").read_text(encoding="utf-8"))
    expanded = json.loads((samples / "odk-central-odata-submissions-expanded.json").read_text(encoding="utf-8"))
    _submit(pulls, odk_sample_rows()[0])
    url = f"{pulls.url}/v1/projects/{ODK_PROJECT}/forms/{ODK_FORM}.svc/Submissions"
    auth = ("gateway@example.org", ENVIRON["ODK_PASSWORD"])
    async with httpx.AsyncClient(auth=auth) as client:
        plain = (await client.get(url)).json()
        full = (await client.get(url, params={"$expand": "*", "$count": "true"})).json()
    assert plain["value"] == default["value"]
    assert full["value"] == expanded["value"] and full["@odata.count"] == expanded["@odata.count"]
    assert plain["@odata.context"].endswith("/v1/projects/4/forms/chw_household_visit.svc/$metadata#Submissions")
