"""The operator console in a real browser (Playwright driving Debian's headless chromium).

Against a gateway served by uvicorn on a free port: log in, ingest a record and watch it arrive
in the message log (htmx refreshes it, no reload), make a dead letter, fix the destination and
replay the dead letter from its page, see it delivered; then the quarantine, clients, playground
and overview. A screenshot of each page is saved under the test's tmp directory (``screenshots/``).

``make test`` installs chromium first (``scripts/browser.sh``); without it this test fails
saying so, it never skips.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.console.harness import PATIENT_ID_IN_RECORD, PATIENT_RECORD, ConsoleGateway
from tests.support.live_server import LiveServer

WAIT_MS = 15_000


def chromium_path() -> str:
    """Debian's chromium, or a failure saying how to get it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("the console's browser test needs Debian's chromium: run `make browser` (scripts/browser.sh,"
                    " which `make test` runs) or `apt-get install chromium`", pytrace=False)
    return found


def record(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PATIENT_RECORD.read_text())
    data["doc"].update(changes)
    return data


def test_an_operator_watches_a_record_arrive_and_replays_a_dead_letter(tmp_path: Path) -> None:
    executable = chromium_path()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    gateway = ConsoleGateway(tmp_path)
    with gateway.running(), LiveServer(gateway.app()) as server, sync_playwright() as playwright:
        sender = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {gateway.sender_token}"})
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        # The machine running the suite is shared: give each step time, not a 5 s default.
        page.set_default_timeout(WAIT_MS)
        expect.set_options(timeout=WAIT_MS)
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)

        def shot(name: str) -> None:
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

        def click(selector: str) -> None:
            # htmx drops a request made while the page's previous one is still swapping in (a
            # click lost, as a person would click again); wait for it to settle first.
            expect(page.locator(".htmx-request, .htmx-swapping, .htmx-settling")).to_have_count(0)
            page.click(selector)

        # Log in.
        page.goto(f"{server.url}/console")
        expect(page).to_have_url(f"{server.url}/console/login?next=/console")
        shot("01-login")
        page.fill("#token", gateway.admin_token)
        click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("Overview")
        shot("02-overview")

        # Ingest a record and watch it arrive (stored, then delivered), without reloading.
        click("header >> text=Messages")
        expect(page.locator("#message-log")).to_contain_text("No messages match")
        answer = sender.post("/ingest/cht", json=record())
        assert answer.status_code == 200
        patient = next(r["id"] for r in answer.json()["results"][0]["resources"] if r["type"] == "Patient")
        row = page.locator("#message-log tr", has_text=PATIENT_ID_IN_RECORD)
        expect(row).to_contain_text("stored", timeout=WAIT_MS)
        expect(page.locator("#message-log tr", has_text=f"Patient/{patient}/_history/1")).to_contain_text(
            "delivered", timeout=WAIT_MS)
        shot("03-messages")

        # The destination refuses the next version: a dead letter.
        gateway.refused.add(f"Patient/{patient}")
        assert sender.post("/ingest/cht", json=record(name="Aisha N. Nakato")).status_code == 200
        click("header >> text=Dead letters")
        letter = page.locator("#dead-letters tr", has_text=f"Patient/{patient}/_history/2")
        for _ in range(WAIT_MS // 250):
            if letter.count():
                break
            page.wait_for_timeout(250)
            page.reload()
        expect(letter).to_contain_text("http_422")
        shot("04-dead-letters")
        click(f"#dead-letters tr:has-text('Patient/{patient}/_history/2') >> text=detail")
        expect(page.locator("#detail")).to_be_visible()
        expect(page.locator("main")).to_contain_text("HTTP 422")
        shot("05-dead-letter")

        # Fix the destination, replay, and see the dead letter delivered.
        gateway.refused.clear()
        click("button:has-text('Replay')")
        expect(page.locator(".notice")).to_contain_text("Sent again")
        page.goto(f"{server.url}/console/messages?kind=delivery&status=delivered")
        expect(page.locator("#message-log tr", has_text=f"Patient/{patient}/_history/2")).to_be_visible(
            timeout=WAIT_MS)
        click("header >> text=Dead letters")
        expect(page.locator("#dead-letters")).to_contain_text("No dead letters")

        # A record the mapping refuses waits in the quarantine.
        held = sender.post("/ingest/cht", json=record(_id="bad-sex", sex="banana"))
        assert held.status_code == 202
        click("header >> text=Quarantine")
        click("#quarantine >> text=" + str(held.json()["results"][0]["quarantine_id"]))
        expect(page.locator("#issues")).to_contain_text("administrative-gender")
        shot("06-quarantined")

        # Clients: create one; its token is shown once.
        click("header >> text=Clients")
        page.fill("input[name=name]", "openmrs")
        page.fill("input[name=scopes]", "system/Patient.rs")
        click("button:has-text('Create')")
        token = page.locator("#new-token").inner_text().strip()
        assert httpx.get(f"{server.url}/fhir/Patient", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        shot("07-clients")

        # The playground maps a pasted record (htmx swaps the result in).
        click("header >> text=Mapping playground")
        page.select_option("select[name=source]", "cht")
        page.fill("textarea[name=record]", PATIENT_RECORD.read_text())
        click("button:has-text('Map it')")
        expect(page.locator("#result")).to_contain_text("The Bundle is valid FHIR R4.")
        shot("08-playground")

        # Pause and resume the destination from the overview.
        click("header >> text=Overview")
        click("tr[data-destination=shr] >> button:has-text('Pause')")
        expect(page.locator(".notice")).to_contain_text("Delivery paused")
        expect(page.locator("tr[data-destination=shr] button")).to_have_text("Resume")
        shot("09-overview-paused")
        click("tr[data-destination=shr] >> button:has-text('Resume')")
        expect(page.locator("tr[data-destination=shr] button")).to_have_text("Pause")

        browser.close()
        sender.close()
    assert problems == [], problems
    taken = sorted(path.name for path in shots.iterdir())
    assert len(taken) == 9 and all((shots / name).stat().st_size > 5000 for name in taken), taken


