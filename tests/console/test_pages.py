"""The operator console through the ASGI client: login, sessions, CSRF, every page and action, error pages."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api.app import create_app
from gateway.settings import Settings
from gateway.store import MessageFilter
from tests.console.harness import (
    PATIENT_ID_IN_RECORD,
    PATIENT_RECORD,
    REPO,
    ConsoleGateway,
    console_client,
    csrf_of,
    log_in,
)

PAGES = ["/console", "/console/messages", "/console/quarantine", "/console/dead-letters", "/console/clients",
         "/console/playground", "/console/live/overview", "/console/live/messages", "/console/quarantine/1",
         "/console/dead-letters/shr:1"]
ACTIONS = ["/console/destinations/shr/pause", "/console/destinations/shr/resume", "/console/dead-letters/shr:1/replay",
           "/console/dead-letters/shr:1/purge", "/console/dead-letters/replay", "/console/quarantine/1/replay",
           "/console/quarantine/1/discard", "/console/clients", "/console/clients/reader/revoke",
           "/console/playground", "/console/logout"]


class Harness:
    def __init__(self, gateway: ConsoleGateway, app: Any) -> None:
        self.gateway = gateway
        self.app = app
        self.console = console_client(app)
        self._clients = [self.console]

    def api(self, token: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://gateway.test",
                                   headers={"Authorization": f"Bearer {token}"})
        self._clients.append(client)
        return client

    async def ingest(self, record: Any) -> httpx.Response:
        return await self.api(self.gateway.sender_token).post("/ingest/cht", json=record)

    async def csrf(self, path: str = "/console") -> str:
        return csrf_of((await self.console.get(path)).text)

    async def post(self, path: str, data: dict[str, str] | None = None) -> httpx.Response:
        return await self.console.post(path, data={"csrf": await self.csrf(), **(data or {})})

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    gateway = ConsoleGateway(tmp_path)
    with gateway.running():
        app = gateway.app()
        async with app.router.lifespan_context(app):
            harness = Harness(gateway, app)
            yield harness
            await harness.aclose()


@pytest.fixture
async def logged_in(harness: Harness) -> Harness:
    answer = await log_in(harness.console, harness.gateway.admin_token)
    assert answer.status_code == 303 and answer.headers["location"] == "/console"
    return harness


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def patient_record() -> dict[str, Any]:
    record: dict[str, Any] = json.loads(PATIENT_RECORD.read_text())
    return record


# -- login and sessions ------------------------------------------------------------------------

@pytest.mark.parametrize("path", PAGES)
async def test_every_page_needs_a_login(harness: Harness, path: str) -> None:
    answer = await harness.console.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/login?next=")


@pytest.mark.parametrize("path", [p for p in ACTIONS if p != "/console/logout"])
async def test_every_action_needs_a_login(harness: Harness, path: str) -> None:
    token = await harness.csrf("/console/login")  # an anonymous session's valid CSRF token is not a login
    answer = await harness.console.post(path, data={"csrf": token})
    assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login")
    paused = [row for row in await harness.app.state.ctx.services.delivery.admin.status() if row.stats.paused]
    assert paused == []


async def test_login_refuses_bad_tokens_and_clients_without_admin(harness: Harness) -> None:
    wrong = await log_in(harness.console, "not-a-token")
    assert wrong.status_code == 401 and "That token is not valid." in wrong.text
    reader = await log_in(harness.console, harness.gateway.reader_token)
    assert reader.status_code == 403 and "admin scope" in reader.text
    assert (await harness.console.get("/console")).status_code == 303


async def test_login_sets_a_signed_httponly_strict_cookie_and_logout_ends_it(harness: Harness) -> None:
    answer = await log_in(harness.console, harness.gateway.admin_token)
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("gateway_console=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; see the https test below
    assert harness.gateway.admin_token not in cookie
    overview = await harness.console.get("/console")
    assert overview.status_code == 200 and "ops" in overview.text
    out = await harness.console.post("/console/logout", data={"csrf": csrf_of(overview.text)})
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert (await harness.console.get("/console")).status_code == 303


async def test_a_tampered_or_foreign_cookie_is_no_session(harness: Harness) -> None:
    await log_in(harness.console, harness.gateway.admin_token)
    value = harness.console.cookies["gateway_console"]
    payload, signature = value.split(".")
    forged = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    harness.console.cookies.set("gateway_console", f"{forged}.{signature}", domain="gateway.test", path="/console")
    assert (await harness.console.get("/console")).status_code == 303
    harness.console.cookies.set("gateway_console", "garbage", domain="gateway.test", path="/console")
    assert (await harness.console.get("/console")).status_code == 303


async def test_revoking_the_client_ends_its_console_sessions(logged_in: Harness) -> None:
    assert (await logged_in.console.get("/console")).status_code == 200
    assert logged_in.gateway.store.revoke_client("ops")
    assert (await logged_in.console.get("/console")).status_code == 303


async def test_rotating_the_clients_token_ends_the_sessions_it_opened(logged_in: Harness) -> None:
    """The session remembers the login token's hash: a new token (`gateway clients rotate`) ends it,
    and the cookie holds the hash, never the token."""
    from gateway.auth import hash_token, new_token

    assert (await logged_in.console.get("/console")).status_code == 200
    fresh = new_token()
    assert logged_in.gateway.store.rekey_client("ops", hash_token(fresh))
    assert (await logged_in.console.get("/console")).status_code == 303
    assert (await log_in(logged_in.console, fresh)).status_code == 303
    assert (await logged_in.console.get("/console")).status_code == 200
    assert fresh not in logged_in.console.cookies["gateway_console"]


async def test_the_login_keeps_only_console_paths_as_where_to_go_next(harness: Harness) -> None:
    page = await harness.console.get("/console/login?next=/console/clients")
    assert 'value="/console/clients"' in page.text
    for target in ("https://evil.example/", "//evil.example/console", "/fhir/Patient"):
        form = await harness.console.get("/console/login")
        answer = await harness.console.post("/console/login", data={
            "token": harness.gateway.admin_token, "csrf": csrf_of(form.text), "next": target})
        assert answer.headers["location"] == "/console"


async def test_the_cookie_is_secure_behind_https(tmp_path: Path) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path}/s.db", queue_url=f"sqlite:///{tmp_path}/q.db",
                        public_base_url="https://gateway.example/fhir", admin_token="x" * 32)
    app = create_app(settings)
    async with app.router.lifespan_context(app), console_client(app, "https://gateway.example") as client:
        answer = await log_in(client, "x" * 32)
        assert answer.status_code == 303 and "Secure" in answer.headers["set-cookie"]
        overview = await client.get("/console")
        assert overview.status_code == 200 and "admin-token" in overview.text


# -- CSRF -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ACTIONS + ["/console/login"])
async def test_every_post_without_the_csrf_token_is_refused(logged_in: Harness, path: str) -> None:
    for data in ({}, {"csrf": "forged"}):
        answer = await logged_in.console.post(path, data={**data, "token": logged_in.gateway.admin_token,
                                                          "name": "x", "scopes": "admin", "record": "{}"})
        assert answer.status_code == 403, path
        assert "did not come from the console" in answer.text
    assert (await logged_in.console.get("/console")).status_code == 200  # still logged in: logout was refused
    assert not any(row.stats.paused for row in await logged_in.app.state.ctx.services.delivery.admin.status())


async def test_the_csrf_token_of_another_session_is_refused(logged_in: Harness) -> None:
    other = console_client(logged_in.app)
    await log_in(other, logged_in.gateway.admin_token)
    foreign = csrf_of((await other.get("/console")).text)
    await other.aclose()
    answer = await logged_in.console.post("/console/destinations/shr/pause", data={"csrf": foreign})
    assert answer.status_code == 403


async def test_htmx_requests_send_the_token_as_a_header(logged_in: Harness) -> None:
    token = await logged_in.csrf()
    answer = await logged_in.console.post("/console/destinations/shr/pause", headers={"X-CSRF-Token": token,
                                                                                     "HX-Request": "true"})
    assert answer.status_code == 204 and answer.headers["HX-Redirect"] == "/console?notice=paused"


# -- pages and actions -----------------------------------------------------------------------------

async def test_overview_shows_records_in_and_every_destination_figure(logged_in: Harness) -> None:
    assert (await logged_in.ingest(patient_record())).status_code == 200

    async def counted() -> bool:
        page = (await logged_in.console.get("/console/live/overview")).text
        return re.search(r"<td>cht</td>\s*<td class=\"num\">1</td>", page) is not None
    await eventually(counted)
    page = (await logged_in.console.get("/console")).text
    status = (await logged_in.api(logged_in.gateway.admin_token).get("/admin/destinations")).json()
    for key in status["destinations"][0]:
        if key not in ("name", "kind", "enabled"):
            assert f"<th>{key.replace('_', ' ')}</th>" in page  # every field the admin API gives, new ones too
    assert 'data-destination="shr"' in page and "status-closed" in page


async def test_pause_and_resume_go_through_the_delivery_admin(logged_in: Harness) -> None:
    admin = logged_in.app.state.ctx.services.delivery.admin
    answer = await logged_in.post("/console/destinations/shr/pause")
    assert answer.status_code == 303 and answer.headers["location"] == "/console?notice=paused"
    assert (await admin.status())[0].stats.paused
    page = (await logged_in.console.get(answer.headers["location"])).text
    assert "Delivery paused" in page and "/console/destinations/shr/resume" in page
    await logged_in.post("/console/destinations/shr/resume")
    assert not (await admin.status())[0].stats.paused
    missing = await logged_in.post("/console/destinations/nowhere/pause")
    assert missing.status_code == 404 and "no destination is named" in missing.text


async def test_message_log_lists_records_and_attempts_and_searches(logged_in: Harness) -> None:
    assert (await logged_in.ingest(patient_record())).status_code == 200
    bad = patient_record()
    bad["doc"]["_id"] = "bad-1"
    bad["doc"]["sex"] = "banana"
    assert (await logged_in.ingest(bad)).status_code == 202

    async def delivered() -> bool:
        return "status-delivered" in (await logged_in.console.get("/console/live/messages")).text
    await eventually(delivered)
    store = logged_in.gateway.store
    patient = next(line.entry.patient for line in store.message_search(MessageFilter(kind="received", status="stored")))
    assert patient is not None
    everything = (await logged_in.console.get("/console/messages")).text
    assert PATIENT_ID_IN_RECORD in everything and "bad-1" in everything and "status-quarantined" in everything
    held = (await logged_in.console.get("/console/messages?status=quarantined")).text
    assert "bad-1" in held and PATIENT_ID_IN_RECORD not in held
    by_patient = (await logged_in.console.get(f"/console/messages?patient=Patient/{patient}")).text
    assert "status-delivered" in by_patient and "status-stored" in by_patient and "bad-1" not in by_patient
    assert "bad-1" not in (await logged_in.console.get("/console/messages?kind=delivery")).text
    assert "bad-1" in (await logged_in.console.get("/console/messages?channel=cht")).text
    assert "No messages match" in (await logged_in.console.get("/console/messages?since=2999-01-01")).text
    assert "bad-1" in (await logged_in.console.get("/console/messages?until=2999-01-01T00:00")).text
    wrong = await logged_in.console.get("/console/messages?since=yesterday")
    assert wrong.status_code == 400 and "from: use a date" in wrong.text
    assert "kept 30 days" in everything


async def test_quarantine_detail_replay_and_discard(logged_in: Harness) -> None:
    bad = patient_record()
    bad["doc"]["_id"] = "<script>alert(1)</script>"
    bad["doc"]["sex"] = "banana"
    answer = await logged_in.ingest(bad)
    qid = answer.json()["results"][0]["quarantine_id"]
    listing = (await logged_in.console.get("/console/quarantine")).text
    assert f'href="/console/quarantine/{qid}"' in listing and "code-invalid" in listing
    assert "<script>alert(1)</script>" not in listing and "&lt;script&gt;alert(1)&lt;/script&gt;" in listing
    detail = (await logged_in.console.get(f"/console/quarantine/{qid}")).text
    assert "administrative-gender" in detail and "banana" in detail and "<script>alert" not in detail
    again = await logged_in.post(f"/console/quarantine/{qid}/replay")
    assert again.status_code == 303 and again.headers["location"] == f"/console/quarantine/{qid}?notice=replay-held"
    assert logged_in.gateway.store.quarantine_get(qid).attempts == 2  # type: ignore[union-attr]
    gone = await logged_in.post(f"/console/quarantine/{qid}/discard")
    assert gone.status_code == 303
    assert logged_in.gateway.store.quarantine_get(qid).status == "discarded"  # type: ignore[union-attr]
    twice = await logged_in.post(f"/console/quarantine/{qid}/discard")
    assert twice.status_code == 409 and "not held" in twice.text
    assert "Nothing held" in (await logged_in.console.get("/console/quarantine")).text
    assert "discarded" in (await logged_in.console.get("/console/quarantine?status=all")).text


async def test_dead_letters_detail_replay_and_discard(logged_in: Harness) -> None:
    gateway = logged_in.gateway
    admin = logged_in.app.state.ctx.services.delivery.admin
    record = patient_record()
    answer = await logged_in.ingest(record)
    patient = next(r["id"] for r in answer.json()["results"][0]["resources"] if r["type"] == "Patient")
    await eventually(lambda: _delivered(admin))
    gateway.refused.add(f"Patient/{patient}")
    record["doc"]["name"] = "Aisha N. Nakato"  # a new version, which the destination now refuses
    assert (await logged_in.ingest(record)).status_code == 200

    async def dead() -> bool:
        return "status-dead" in (await logged_in.console.get("/console/dead-letters")).text
    await eventually(dead)
    listing = (await logged_in.console.get("/console/dead-letters?destination=shr")).text
    job_id = re.search(r'data-id="([^"]+)"', listing).group(1)  # type: ignore[union-attr]
    detail = (await logged_in.console.get(f"/console/dead-letters/{job_id}")).text
    assert "http_422" in detail and f"Patient/{patient}" in detail and "HTTP 422" in detail
    gateway.refused.clear()  # the destination is fixed
    replayed = await logged_in.post(f"/console/dead-letters/{job_id}/replay")
    assert replayed.status_code == 303 and replayed.headers["location"] == "/console/dead-letters?notice=replayed"
    lines = gateway.store.message_search

    async def redelivered() -> bool:
        return any(line.entry.ref == job_id and line.entry.status == "delivered"
                   for line in lines(MessageFilter(kind="delivery")))
    await eventually(redelivered)
    assert "No dead letters" in (await logged_in.console.get("/console/dead-letters")).text
    missing = await logged_in.post(f"/console/dead-letters/{job_id}/purge")
    assert missing.status_code == 404 and "no dead letter" in missing.text
    unfiltered = await logged_in.post("/console/dead-letters/replay")
    assert unfiltered.status_code == 400


async def _delivered(admin: Any) -> bool:
    row = (await admin.status())[0].stats
    return bool(row.depth == 0 and row.cursor > 0)


async def test_a_dead_letter_can_be_discarded_and_a_filter_replayed(logged_in: Harness) -> None:
    gateway = logged_in.gateway
    answer = await logged_in.ingest(patient_record())
    patient = next(r["id"] for r in answer.json()["results"][0]["resources"] if r["type"] == "Patient")
    gateway.refused.add(f"Patient/{patient}")
    admin = logged_in.app.state.ctx.services.delivery.admin
    # The first delivery may have happened before the refusal: a new version makes sure one is refused.
    record = patient_record()
    record["doc"]["name"] = "Someone Else"
    await logged_in.ingest(record)

    async def dead() -> bool:
        stats = (await admin.status())[0].stats
        return bool(stats.dead >= 1 and stats.depth == 0)
    await eventually(dead)
    count = (await admin.status())[0].stats.dead
    replayed = await logged_in.post("/console/dead-letters/replay", {"destination": "shr", "reason": "http_422"})
    assert replayed.headers["location"] == f"/console/dead-letters?notice=replayed-{count}"
    page = (await logged_in.console.get(replayed.headers["location"])).text
    assert f"Sent {count} dead letter(s) again." in page
    await eventually(dead)
    job_id = (await admin.dead_letters(_any(), limit=1))[0].job.id
    gone = await logged_in.post(f"/console/dead-letters/{job_id}/purge")
    assert gone.status_code == 303 and gone.headers["location"] == "/console/dead-letters?notice=discarded"
    assert all(letter.job.id != job_id for letter in await admin.dead_letters(_any()))


def _any() -> Any:
    from gateway.delivery import DeadLetterFilter

    return DeadLetterFilter()


async def test_clients_create_shows_the_token_once_and_revoke_stops_it(logged_in: Harness) -> None:
    created = await logged_in.post("/console/clients", {"name": "openmrs", "scopes": "system/Patient.rs",
                                                        "expires_days": "30"})
    assert created.status_code == 200
    token = re.search(r'id="new-token">([^<]+)<', created.text).group(1)  # type: ignore[union-attr]
    assert (await logged_in.api(token).get("/fhir/Patient")).status_code == 200
    listing = (await logged_in.console.get("/console/clients")).text
    assert 'data-client="openmrs"' in listing and token not in listing
    client = logged_in.gateway.store.client_by_name("openmrs")
    assert client is not None and client.expires is not None and client.scopes == ("system/Patient.rs",)
    revoked = await logged_in.post("/console/clients/openmrs/revoke")
    assert revoked.status_code == 303 and revoked.headers["location"] == "/console/clients?notice=revoked"
    assert (await logged_in.api(token).get("/fhir/Patient")).status_code == 401
    missing = await logged_in.post("/console/clients/nobody/revoke")
    assert missing.status_code == 404


@pytest.mark.parametrize(("form", "problem"), [
    ({"name": "bad name!", "scopes": "admin"}, "invalid client name"),
    ({"name": "x", "scopes": "system/Nothing.rs"}, "Nothing"),
    ({"name": "x", "scopes": ""}, "at least one scope"),
    ({"name": "x", "scopes": "admin", "expires_days": "-3"}, "a number of days"),
    ({"name": "x", "scopes": "admin", "expires_days": "\u00b2"}, "a number of days"),  # "²".isdigit(); int() refuses it
])
async def test_clients_create_names_what_is_wrong(logged_in: Harness, form: dict[str, str], problem: str) -> None:
    answer = await logged_in.post("/console/clients", form)
    assert answer.status_code == 200 and 'role="alert"' in answer.text and problem in answer.text
    assert logged_in.gateway.store.client_by_name("x") is None


async def test_playground_shows_the_bundle_and_validation(logged_in: Harness) -> None:
    page = (await logged_in.console.get("/console/playground")).text
    assert '<option value="cht"' in page
    answer = await logged_in.post("/console/playground", {"source": "cht", "record": PATIENT_RECORD.read_text()})
    assert answer.status_code == 200
    assert "The Bundle is valid FHIR R4." in answer.text and "&#34;resourceType&#34;: &#34;Bundle&#34;" in answer.text
    assert "No DHIS2 destination" in answer.text
    assert logged_in.gateway.store.message_search(MessageFilter()) == []  # nothing stored, nothing sent


async def test_playground_names_the_mapping_file_and_line_of_a_refused_record(logged_in: Harness) -> None:
    record = patient_record()
    record["doc"]["sex"] = "<b>banana</b>"
    answer = await logged_in.post("/console/playground", {"source": "cht", "record": json.dumps(record)},)
    person = REPO / "mappings" / "cht" / "person.yaml"
    line = next(n for n, text in enumerate(person.read_text().splitlines(), 1) if text.strip() == "- name: patient")
    assert f"{person}:{line}" in answer.text
    assert "administrative-gender" in answer.text and "<b>banana" not in answer.text
    fragment = await logged_in.console.post("/console/playground", data={
        "csrf": await logged_in.csrf(), "source": "cht", "record": json.dumps(record)}, headers={"HX-Request": "true"})
    assert "<html" not in fragment.text and f"{person}:{line}" in fragment.text


@pytest.mark.parametrize(("form", "problem"), [
    ({"source": "cht", "record": "{not json"}, "not valid JSON"),
    ({"source": "cht", "record": "   "}, "Paste a record first"),
    ({"source": "nowhere", "record": "{}"}, "configured sources"),
])
async def test_playground_refuses_bad_input_with_a_page(logged_in: Harness, form: dict[str, str], problem: str) -> None:
    answer = await logged_in.post("/console/playground", form)
    assert answer.status_code == 400 and problem in answer.text and "<html" in answer.text



@pytest.mark.parametrize(("form", "problem"), [
    ({"source": "cht", "record": "{not json"}, "not valid JSON"),
    ({"source": "cht", "record": "   "}, "Paste a record first"),
    ({"source": "nowhere", "record": "{}"}, "configured sources"),
])
async def test_playground_refuses_bad_input_in_the_result_for_htmx(
    logged_in: Harness, form: dict[str, str], problem: str
) -> None:
    """In the browser the form posts through htmx, which swaps no 4xx answer in (htmx 2's default
    responseHandling): a pasted record that was not JSON showed nothing at all. The refusal comes
    as the result fragment, an alert in ``#result``."""
    fragment = await logged_in.console.post("/console/playground", data={"csrf": await logged_in.csrf(), **form},
                                            headers={"HX-Request": "true"})
    assert fragment.status_code == 200, fragment.status_code
    assert "<html" not in fragment.text and 'role="alert"' in fragment.text and problem in fragment.text



async def test_htmx_swaps_error_answers_in(logged_in: Harness) -> None:
    """Every link and form is boosted (``hx-boost``) and htmx 2 by default swaps no 4xx/5xx answer:
    the Identity link of a gateway without identity, a message search with a bad date, a replay
    another operator already made answered with an error page the browser never showed (the click
    seemed to do nothing). The console's htmx config swaps them; a boosted request gets the error
    page, a fragment request (a live table, the playground's result) the error alone."""
    page = (await logged_in.console.get("/console")).text
    meta = re.search(r'name="htmx-config" content=\'([^\']*)\'', page)
    assert meta is not None
    config = json.loads(html.unescape(meta.group(1)))
    errors = [rule for rule in config["responseHandling"] if rule["code"] == "[45].."]
    assert errors == [{"code": "[45]..", "swap": True, "error": True}], config
    boosted = await logged_in.console.get("/console/messages?since=yesterday",
                                          headers={"HX-Request": "true", "HX-Boosted": "true"})
    assert boosted.status_code == 400 and "<html" in boosted.text and "from: use a date" in boosted.text
    fragment = await logged_in.console.get("/console/live/messages?since=yesterday", headers={"HX-Request": "true"})
    assert fragment.status_code == 400 and "<html" not in fragment.text and "<header" not in fragment.text
    assert 'role="alert"' in fragment.text and "from: use a date" in fragment.text


# -- errors are pages ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/console/nothing-here", "/console/quarantine/999", "/console/quarantine/abc",
                                  "/console/dead-letters/shr:999", "/console/static/secret.py",
                                  "/console/static/..%2Fweb.py"])
async def test_unknown_pages_are_404_pages(logged_in: Harness, path: str) -> None:
    answer = await logged_in.console.get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html") and "<h1>Not found</h1>" in answer.text


async def test_a_wrong_method_or_action_is_a_page_not_a_500(logged_in: Harness) -> None:
    assert (await logged_in.console.get("/console/logout")).status_code == 405
    assert "<html" in (await logged_in.console.get("/console/logout")).text
    answer = await logged_in.post("/console/quarantine/1/explode")
    assert answer.status_code == 404 and "<html" in answer.text


async def test_numbers_in_console_urls_in_other_scripts_are_not_a_500(logged_in: Harness) -> None:
    # "²".isdigit() and "١٢".isdigit() are True, and int() refuses the first: a ValueError (500).
    for digits in ("\u00b2", "\u0661\u0662"):
        assert (await logged_in.console.get("/console/messages", params={"before": digits})).status_code == 200
        assert (await logged_in.console.get("/console/quarantine", params={"after": digits})).status_code == 200
        answer = await logged_in.console.get(f"/console/quarantine/{digits}")
        assert answer.status_code == 404 and "<html" in answer.text
        answer = await logged_in.post(f"/console/quarantine/{digits}/discard")
        assert answer.status_code == 404 and "<html" in answer.text
    for notice in ("replayed-\u00b2", "replayed-" + "9" * 5000):
        answer = await logged_in.console.get("/console/dead-letters", params={"notice": notice})
        assert answer.status_code == 200 and "dead letter(s) again" not in answer.text


async def test_static_files_are_served_without_a_login(harness: Harness) -> None:
    htmx = await harness.console.get("/console/static/htmx.min.js")
    assert htmx.status_code == 200 and htmx.headers["content-type"].startswith("text/javascript")
    assert b"htmx" in htmx.content[:200]
    assert (await harness.console.get("/console/static/console.css")).status_code == 200


async def test_pages_forbid_framing_and_caching(logged_in: Harness) -> None:
    answer = await logged_in.console.get("/console")
    assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


async def test_console_actions_are_in_the_audit_trail(logged_in: Harness) -> None:
    await logged_in.post("/console/destinations/shr/pause")
    audit = logged_in.app.state.ctx.services.audit
    await audit.flush()
    events = await logged_in.api(logged_in.gateway.admin_token).get(
        "/fhir/AuditEvent?subtype=destination-pause&agent-name=ops")
    assert events.status_code == 200
    assert any(e["resource"]["subtype"][0]["code"] == "destination-pause" for e in events.json().get("entry", []))


async def test_a_visit_record_is_logged_under_its_patient(logged_in: Harness) -> None:
    from tests.dhis2 import cht_records as cht

    for doc in (cht.area(), cht.household(1), cht.person(1)):
        assert (await logged_in.ingest({"doc": doc})).status_code == 200
    visit = await logged_in.ingest({"doc": cht.assessment(1)})
    assert visit.status_code == 200, visit.text
    assert all(r["type"] != "Patient" for r in visit.json()["results"][0]["resources"])
    store = logged_in.gateway.store

    async def logged() -> bool:
        return len(store.message_search(MessageFilter(kind="received"))) == 4
    await eventually(logged)
    lines = store.message_search(MessageFilter(kind="received"))
    person = next(line.entry for line in lines if line.entry.subject == cht.person(1)["_id"])
    assessment = next(line.entry for line in lines if line.entry.subject == cht.assessment(1)["_id"])
    assert person.patient is not None and assessment.patient == person.patient
    page = (await logged_in.console.get(f"/console/messages?patient={person.patient}&kind=received")).text
    assert cht.assessment(1)["_id"] in page and cht.household(1)["_id"] not in page


async def test_with_the_console_off_there_is_no_console(tmp_path: Path) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path}/s.db", queue_url=f"sqlite:///{tmp_path}/q.db",
                        console={"enabled": False})
    app = create_app(settings)
    async with app.router.lifespan_context(app), console_client(app) as client:
        for path in ("/console", "/console/login", "/console/static/htmx.min.js"):
            answer = await client.get(path)
            assert answer.status_code == 404 and answer.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("path", ["/console/messages?patient=p%001", "/console/messages?channel=cht%00",
                                  "/console/live/messages?patient=%1b", "/console/quarantine?source=ch%00t"])
async def test_a_filter_holding_a_control_character_is_a_400_page(logged_in: Harness, path: str) -> None:
    """Names and ids hold none; on PostgreSQL a NUL reached the store and failed the page with a 500."""
    answer = await logged_in.console.get(path)
    assert answer.status_code == 400, answer.text[:300]
    assert "control character" in answer.text
