"""Pulling CommCare's Form and Case APIs, CHT's _changes feed and Kobo's data endpoint from their stand-ins."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from gateway.pull import PullAuthError, PullError
from tests.pull.conftest import CC_DOMAIN, KOBO_ASSET, PullHarness, golden, pulled_sources


def _form(n: int) -> Any:
    form = copy.deepcopy(golden("commcare", "tb-dot-visit"))
    if n:
        form["id"] = form["form"]["meta"]["instanceID"] = f"00000000-0000-4000-8000-{n:012d}"
    return form


async def test_commcare_forms_page_by_indexed_on_and_edits_come_again(pulls: PullHarness) -> None:
    for n in range(5):
        pulls.sandbox.commcare.submit_form(CC_DOMAIN, _form(n))
    report = await pulls.runner.pull("commcare")
    assert (report.records, report.stored, report.quarantined) == (5, 5, 0)
    assert [q.get("offset") for q in pulls.requests("commcare")] == [None, "2", "4"]
    newest = max(f["indexed_on"] for f in pulls.sandbox.commcare.forms[CC_DOMAIN])
    assert pulls.store.pull_cursor("commcare") == newest
    # An archived form is re-indexed: the next pull reads it and takes back what it made.
    archived = _form(3)
    made = pulls.produced("commcare", archived)
    pulls.sandbox.commcare.edit_form(CC_DOMAIN, archived["id"], lambda f: f.update(archived=True))
    again = await pulls.runner.pull("commcare")
    assert pulls.requests("commcare")[-1]["indexed_on_start"] == newest
    assert again.deleted == 1 and again.quarantined == 0
    others = {ref for n in (0, 1, 2, 4) for ref in pulls.produced("commcare", _form(n))}
    only_archived = [ref for ref in made if ref not in others and ref[0] != "Provenance"]  # history stays
    assert "Encounter" in {t for t, _ in only_archived}
    assert all(pulls.taken_back(t, i) for t, i in only_archived)
    assert not any(pulls.taken_back(t, i) for t, i in others)


async def test_commcare_case_api_v2_cases_map_like_forwarded_cases(pulls: PullHarness) -> None:
    forwarded = golden("commcare", "tb-patient-case")
    v2 = {k: v for k, v in forwarded.items() if k not in ("properties", "date_modified", "server_date_modified")}
    props = dict(forwarded["properties"])
    v2.update({key: props.pop(key) for key in ("case_name", "case_type", "date_opened", "external_id", "owner_id")})
    v2.update(properties=props, last_modified=forwarded["date_modified"],
              server_last_modified=forwarded["server_date_modified"])  # fmt: skip
    pulls.sandbox.commcare.put_case(CC_DOMAIN, v2)
    report = await pulls.runner.pull("commcare-cases")
    assert (report.stored, report.quarantined) == (1, 0)
    assert all(pulls.read(t, i) is not None for t, i in pulls.produced("commcare", forwarded))
    # Closed in HQ: the case is re-indexed, pulled again, and what it made is taken back.
    pulls.sandbox.commcare.put_case(CC_DOMAIN, {**v2, "closed": True})
    again = await pulls.runner.pull("commcare-cases")
    assert again.deleted == 1
    assert all(pulls.taken_back(t, i) for t, i in pulls.produced("commcare", forwarded) if t != "Provenance")
    assert "indexed_on.gte" in pulls.requests("commcare")[-1]


async def test_cht_changes_wrap_docs_skip_non_records_and_take_back_deletions(pulls: PullHarness) -> None:
    person = golden("cht", "person-patient")["doc"]
    report_doc = golden("cht", "report-data-record-assessment")["doc"]
    pulls.sandbox.cht.put(person)
    pulls.sandbox.cht.put({"_id": "task~org.couchdb.user:chw~1", "type": "task", "state": "Ready"})
    pulls.sandbox.cht.put({"_id": "_design/medic", "views": {}})
    pulls.sandbox.cht.put(report_doc)
    report = await pulls.runner.pull("cht")
    assert (report.records, report.stored, report.quarantined) == (2, 2, 0)
    assert pulls.store.pull_cursor("cht") == f'"{pulls.sandbox.cht.seq_text(4)}"'
    patient = [i for t, i in pulls.produced("cht", {"doc": person}) if t == "Patient"]
    assert patient and pulls.read("Patient", patient[0]) is not None
    # Edited, then deleted, in CouchDB: the next pull sees only the latest change of each document.
    pulls.sandbox.cht.put({**person, "name": "Aisha Nakato Mirembe"})
    assert (await pulls.runner.pull("cht")).stored == 1
    assert pulls.read("Patient", patient[0])["name"][0]["text"] == "Aisha Nakato Mirembe"  # type: ignore[index]
    pulls.sandbox.cht.delete(person["_id"])
    deleted = await pulls.runner.pull("cht")
    assert deleted.deleted == 1 and pulls.read("Patient", patient[0]) is None
    assert pulls.requests("cht")[-1]["since"] == pulls.sandbox.cht.seq_text(5)


async def test_kobo_pages_by_submission_time(pulls: PullHarness) -> None:
    visit = golden("kobo", "hypertension-visit")
    for n in range(3):
        row = copy.deepcopy(visit)
        if n:
            row["meta/rootUuid"] = row["meta/instanceID"] = f"uuid:00000000-0000-4000-8000-{n:012d}"
            row["_uuid"] = row["meta/rootUuid"].removeprefix("uuid:")
        pulls.sandbox.kobo.submit(KOBO_ASSET, row)
    report = await pulls.runner.pull("kobo")
    assert (report.records, report.stored, report.quarantined) == (3, 3, 0)
    assert [q.get("start") for q in pulls.requests("kobo")] == ["0", "2"]
    newest = max(r["_submission_time"] for r in pulls.sandbox.kobo.assets[KOBO_ASSET])
    assert pulls.store.pull_cursor("kobo") == newest
    await pulls.runner.pull("kobo")
    assert json.loads(pulls.requests("kobo")[-1]["query"]) == {"_submission_time": {"$gte": newest}}


@pytest.mark.parametrize(("source", "api"), [("commcare", "commcare"), ("cht", "cht"), ("kobo", "kobo")])
async def test_refused_credentials_are_a_clear_error_on_every_api(
    sandbox: Any, served: str, store: Any, source: str, api: str
) -> None:
    harness = PullHarness(sandbox, served, store, pulled_sources(served, secret="WRONG"))
    try:
        with pytest.raises(PullAuthError, match="answered 401: the credentials were refused"):
            await harness.runner.pull(source)
        assert len(harness.requests(api)) == 1
    finally:
        harness.ingest.close()


async def test_a_wrong_asset_is_named_not_retried(sandbox: Any, served: str, store: Any) -> None:
    sources = pulled_sources(served)
    harness = PullHarness(sandbox, served, store, sources)
    try:
        sandbox.forbidden.add("kobo")
        with pytest.raises(PullError, match="403"):
            await harness.runner.pull("kobo")
    finally:
        harness.ingest.close()


async def test_referral_outcomes_the_gateway_wrote_back_are_not_pulled_as_records(pulls: PullHarness) -> None:
    pulls.sandbox.cht.put(golden("cht", "report-data-record-assessment")["doc"])
    status, _ = pulls.sandbox.cht.write("outcome-1", {"type": "data_record", "form": "referral_outcome",
                                                      "fields": {"outcome": "completed"}})  # fmt: skip
    assert status == 201
    report = await pulls.runner.pull("cht")
    assert (report.records, report.stored, report.quarantined) == (1, 1, 0)
    pulls.sandbox.commcare.submit_form(CC_DOMAIN, _form(0))
    outcome = (b'<data xmlns="http://commcarehq.org/chw-gateway/referral-outcome"><outcome>completed</outcome>'
               b'<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>o-1</instanceID></meta></data>')  # fmt: skip
    assert pulls.sandbox.commcare.receiver.submit(CC_DOMAIN, outcome)[0] == 201
    report = await pulls.runner.pull("commcare")
    assert (report.records, report.stored, report.quarantined) == (1, 1, 0)
    assert pulls.store.quarantine_list() == []
