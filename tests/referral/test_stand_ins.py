"""The write side of the CHT and CommCare stand-ins, over HTTP: what the return path relies on."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from source_sandbox import SourceSandbox
from tests.support.live_server import LiveServer

CHT_AUTH = ("gateway@example.org", "pull-secret")
CC_AUTH = {"Authorization": "ApiKey gateway@example.org:cc-api-key"}
DOMAIN = "pih-chw-demo"
FORM = b"""<?xml version='1.0' encoding='utf-8'?>
<data xmlns="http://commcarehq.org/chw-gateway/referral-outcome" name="Referral outcome">
  <outcome>completed</outcome>
  <n0:case xmlns:n0="http://commcarehq.org/case/transaction/v2" case_id="%(case)s"
      date_modified="2025-05-16T12:00:00Z" user_id="u1">
    <n0:update><n0:referral_status>completed</n0:referral_status></n0:update>
  </n0:case>
  <orx:meta xmlns:orx="http://openrosa.org/jr/xforms"><orx:instanceID>%(instance)s</orx:instanceID></orx:meta>
</data>"""


@pytest.fixture
def sandbox() -> SourceSandbox:
    sandbox = SourceSandbox()
    sandbox.commcare.put_case(DOMAIN, {"case_id": "case-1", "case_type": "tb_patient", "properties": {},
                                       "xform_ids": []})  # fmt: skip
    return sandbox


@pytest.fixture
def url(sandbox: SourceSandbox) -> Iterator[str]:
    with LiveServer(sandbox.app()) as server:
        yield server.url


def test_a_couchdb_document_written_twice_under_one_id_is_a_conflict(sandbox: SourceSandbox, url: str) -> None:
    doc = {"type": "data_record", "form": "referral_outcome", "fields": {"outcome": "completed"}}
    first = httpx.put(f"{url}/medic/outcome-1", json=doc, auth=CHT_AUTH)
    assert first.status_code == 201 and first.json()["ok"] is True and first.json()["id"] == "outcome-1"
    again = httpx.put(f"{url}/medic/outcome-1", json={**doc, "fields": {"outcome": "other"}}, auth=CHT_AUTH)
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    (stored,) = sandbox.cht.reports("referral_outcome")
    assert stored["fields"] == {"outcome": "completed"}
    with_rev = httpx.put(f"{url}/medic/outcome-1", json={**doc, "_rev": first.json()["rev"]}, auth=CHT_AUTH)
    assert with_rev.status_code == 201  # an update naming the current revision is CouchDB's way
    assert httpx.put(f"{url}/medic/_bad", json=doc, auth=CHT_AUTH).status_code == 400
    assert httpx.put(f"{url}/medic/outcome-2", json=doc, auth=("gateway@example.org", "wrong")).status_code == 401


def test_a_lost_answer_still_stores_the_document(sandbox: SourceSandbox, url: str) -> None:
    sandbox.lose_next_answer("cht")
    lost = httpx.put(f"{url}/medic/outcome-3", json={"type": "data_record", "form": "f"}, auth=CHT_AUTH)
    assert lost.status_code == 504
    assert len(sandbox.cht.reports("f")) == 1


def test_a_slow_lost_answer_stores_the_document_before_the_caller_gives_up(sandbox: SourceSandbox, url: str) -> None:
    sandbox.lose_next_answer("cht", delay=2)
    with pytest.raises(httpx.ReadTimeout):
        httpx.put(f"{url}/medic/outcome-4", json={"type": "data_record", "form": "slow"}, auth=CHT_AUTH, timeout=0.3)
    assert len(sandbox.cht.reports("slow")) == 1


def test_a_form_resubmitted_under_its_instance_id_is_one_form(sandbox: SourceSandbox, url: str) -> None:
    body = FORM % {b"case": b"case-1", b"instance": b"inst-1"}
    for _ in range(2):
        answer = httpx.post(f"{url}/a/{DOMAIN}/receiver/api/", content=body, headers=CC_AUTH)
        assert answer.status_code == 201 and 'nature="submit_success"' in answer.text
    (form,) = sandbox.commcare.forms[DOMAIN]
    assert form["id"] == "inst-1" and form["form"]["@xmlns"] == "http://commcarehq.org/chw-gateway/referral-outcome"
    assert form["form"]["outcome"] == "completed"
    case = sandbox.commcare.case(DOMAIN, "case-1")
    assert case is not None
    assert case["properties"]["referral_status"] == "completed" and case["xform_ids"] == ["inst-1"]


def test_the_receiver_refuses_unknown_cases_malformed_xml_and_bad_keys(sandbox: SourceSandbox, url: str) -> None:
    unknown = FORM % {b"case": b"no-such-case", b"instance": b"inst-2"}
    answer = httpx.post(f"{url}/a/{DOMAIN}/receiver/api/", content=unknown, headers=CC_AUTH)
    assert answer.status_code == 201 and 'nature="submit_error"' in answer.text  # OpenRosa 2.0: received only
    strict = httpx.post(f"{url}/a/{DOMAIN}/receiver/api/", content=unknown,
                        headers={**CC_AUTH, "X-OpenRosa-Version": "3.0"})  # fmt: skip
    assert strict.status_code == 422 and "processing_failure" in strict.text
    assert httpx.post(f"{url}/a/{DOMAIN}/receiver/api/", content=b"<data", headers=CC_AUTH).status_code == 500
    wrong = httpx.post(f"{url}/a/{DOMAIN}/receiver/api/", content=unknown, headers={"Authorization": "ApiKey x:y"})
    assert wrong.status_code == 401
    assert DOMAIN not in sandbox.commcare.forms
