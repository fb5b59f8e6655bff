"""Edge cases of the source APIs' answers, mocked with respx: network errors, Retry-After as a date,
answers that are not JSON, a wrong form id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx

from gateway.pull import PullError
from gateway.store import Store
from source_sandbox import SourceSandbox, odk_sample_rows
from tests.pull.conftest import ODK_FORM, ODK_PROJECT, PullHarness, pulled_sources

BASE = "http://central.test"
URL = f"{BASE}/v1/projects/{ODK_PROJECT}/forms/{ODK_FORM}.svc/Submissions"


def _page(rows: list[dict[str, Any]]) -> httpx.Response:
    return httpx.Response(200, json={"@odata.context": f"{URL}/$metadata#Submissions", "value": rows})


@pytest.fixture
def mocked(store: Store) -> Any:
    harness = PullHarness(SourceSandbox(), BASE, store, pulled_sources(BASE))
    yield harness
    harness.ingest.close()


async def test_network_errors_and_a_retry_after_date_are_waited_out(mocked: PullHarness) -> None:
    later = datetime.now(UTC) + timedelta(seconds=30)
    with respx.mock(assert_all_called=False) as router:
        route = router.get(URL).mock(side_effect=[
            httpx.ConnectError("refused"),
            httpx.Response(503, headers={"Retry-After": format_datetime(later, usegmt=True)}),
            _page(odk_sample_rows()), _page([]), _page([]),
        ])  # fmt: skip
        report = await mocked.runner.pull("odk")
    assert report.stored == 1 and report.retries == 2 and route.call_count == 5
    assert 25.0 <= mocked.sleeps.waits[1] <= 31.0  # the date, not the policy's 2 s


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (httpx.Response(200, text="<html>login</html>"), "answered with something not JSON"),
        (httpx.Response(404, json={"code": 404.1}), "answered 404 to /v1/projects/4/forms/chw_household_visit"),
        (httpx.Response(200, json={"error": "x"}), "the OData answer has no value list"),
    ],
)
async def test_answers_the_pull_cannot_use_end_it_with_the_cursor_unmoved(
    mocked: PullHarness, answer: httpx.Response, message: str
) -> None:
    with respx.mock() as router:
        router.get(URL).mock(return_value=answer)
        with pytest.raises(PullError, match=message):
            await mocked.runner.pull("odk")
    assert mocked.store.pull_cursor("odk") is None
    assert mocked.sleeps.waits == []


async def test_a_password_in_the_base_url_is_never_logged_or_raised(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    base = "http://gw:pw-in-url@central.test"
    harness = PullHarness(SourceSandbox(), base, store, pulled_sources(base))
    try:
        with respx.mock() as router, caplog.at_level("WARNING"):
            router.get(URL).mock(side_effect=[httpx.ConnectError("refused"), httpx.Response(404, json={})])
            with pytest.raises(PullError) as raised:
                await harness.runner.pull("odk")
    finally:
        harness.ingest.close()
    assert "central.test" in str(raised.value) and "pw-in-url" not in str(raised.value)
    assert "central.test" in caplog.text and "pw-in-url" not in caplog.text
