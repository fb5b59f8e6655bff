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
