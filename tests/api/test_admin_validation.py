"""A malformed admin request (a bad query value, a missing body field) says what is wrong, not
only where: the OperationOutcome's diagnostics give each field's reason."""

from __future__ import annotations

from tests.conftest import ApiHarness


async def test_a_malformed_admin_request_names_each_field_and_why(api: ApiHarness) -> None:
    admin = api.with_scopes("admin")
    status = await admin.get("/admin/quarantine", params={"status": "bogus"})
    assert status.status_code == 400
    (issue,) = status.json()["issue"]
    assert issue["expression"] == ["query.status"]
    assert issue["diagnostics"].startswith("the request is malformed: query.status: ")
    assert "held" in issue["diagnostics"] and "bogus" not in issue["diagnostics"]
    limit = (await admin.get("/admin/quarantine", params={"limit": "many"})).json()["issue"][0]
    assert "query.limit: " in limit["diagnostics"] and "integer" in limit["diagnostics"]
    merge = (await admin.post("/admin/identity/merge", json={})).json()["issue"][0]
    assert merge["expression"] == ["body.survivor", "body.loser"]
    assert "body.survivor: Field required; body.loser: Field required" in merge["diagnostics"]


async def test_record_numbers_past_any_row_id_are_a_400_not_an_overflow(api_on: ApiHarness) -> None:
    # SQLite refuses integers past 64 bits ("Python int too large to convert to SQLite INTEGER"): a 500.
    admin = api_on.with_scopes("admin")
    huge = "9" * 30
    listed = await admin.get("/admin/quarantine", params={"after": huge})
    assert listed.status_code == 400, listed.text
    assert listed.json()["issue"][0]["expression"] == ["query.after"]
    for method, path in (("GET", f"/admin/quarantine/{huge}"), ("POST", f"/admin/quarantine/{huge}/replay"),
                         ("POST", f"/admin/quarantine/{huge}/discard")):  # fmt: skip
        response = await admin.request(method, path)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["issue"][0]["expression"] == ["path.qid"], response.text
    largest = str(2**63 - 1)
    assert (await admin.get("/admin/quarantine", params={"after": largest})).status_code == 200
    assert (await admin.get(f"/admin/quarantine/{largest}")).status_code == 404


async def test_a_source_filter_that_no_source_name_can_be_is_a_400_not_a_store_error(api_on: ApiHarness) -> None:
    # PostgreSQL's text holds no NUL: the filter reached the store and failed there (a 500).
    admin = api_on.with_scopes("admin")
    for source in ("ch\x00t", "x" * 65, "a b"):
        listed = await admin.get("/admin/quarantine", params={"source": source})
        assert listed.status_code == 400, listed.text
        assert listed.json()["issue"][0]["expression"] == ["query.source"]
    assert (await admin.get("/admin/quarantine", params={"source": "cht_2-b"})).status_code == 200
