"""Fuzzing a data policy: searches built from the stored data itself never show a hidden row.

The seed is ``test_data_policy``'s (two districts; every hidden resource carries ``HIDDEN``).
Queries are drawn from the values the seeded resources are indexed under — so they do
match, hidden rows included — combined with chains, ``_has``, includes, revincludes,
``_sort``, paging and POST ``_search``, and sent as a client limited to district A's
organisation subtree. Every answer must be free of 5xx, of the ``HIDDEN`` marker and of
any resource outside what the policy shows; on both store backends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api.app import create_app
from gateway.auth import hash_token, new_token
from gateway.search import default_registry, index_rows
from gateway.settings import Settings
from gateway.store import ApiClient, open_store
from tests.api.test_data_policy import SEED, refs_in, visible
from tests.conftest import PG_URL
from tests.support.gateway_app import MACHINE_SPEED_LIMITS
from tests.support.live_server import LiveServer

POLICY = {"organizations": ["Organization/dist-a"], "districts": ["Gasabo"]}
ALLOWED = visible({"pa1", "pa2"})
TYPES = ("Patient", "Observation", "Encounter")
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _values() -> dict[str, list[tuple[str, str]]]:
    """Per type: (parameter, value) for every string/token/reference value the seed is indexed under."""
    out: dict[str, list[tuple[str, str]]] = {t: [] for t in TYPES}
    for resource in SEED:
        rtype = resource["resourceType"]
        if rtype not in out:
            continue
        rows = index_rows(resource, default_registry().indexed(rtype))
        out[rtype] += [(code, exact) for code, _n, exact in rows.string]
        out[rtype] += [(code, f"{system}|{value}" if system else value) for code, system, value in rows.token]
        out[rtype] += [(code, f"{ttype}/{tid}") for code, ttype, tid, _url in rows.reference if ttype and tid]
    return {t: sorted(set(v)) for t, v in out.items()}


VALUES = _values()


@st.composite
def queries(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    """A search type and its parameters, from real values plus cross-type parameters."""
    rtype = draw(st.sampled_from(TYPES))
    pairs = draw(st.lists(st.sampled_from(VALUES[rtype]), max_size=2))
    if rtype != "Patient" and draw(st.booleans()):
        code, value = draw(st.sampled_from(VALUES["Patient"]))
        pairs.append((f"subject:Patient.{code}", value))
    if rtype == "Patient" and draw(st.booleans()):
        source = draw(st.sampled_from(["Observation", "Encounter"]))
        code, value = draw(st.sampled_from(VALUES[source]))
        ref = draw(st.sampled_from(["subject", "patient"] + (["performer"] if source == "Observation" else [])))
        pairs.append((f"_has:{source}:{ref}:{code}", value))
    for key, choices in (
        ("_include", [f"{rtype}:*", "Observation:performer", "Observation:subject", "Patient:organization"]),
        ("_revinclude", ["Observation:subject", "Observation:performer", "Encounter:subject",
                         "Patient:organization"]),
        ("_sort", ["_id", "-_lastUpdated", "family", "-date"]),
        ("_count", ["1", "2", "50"]),
        ("_total", ["accurate", "none"]),
    ):
        if draw(st.integers(0, 2)) == 0:
            pairs.append((key, draw(st.sampled_from(choices))))
    return rtype, pairs


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def district_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """A live gateway holding the seed, and a client limited to district A."""
    schema = f"pf_{uuid.uuid4().hex[:12]}"
    url = (f"sqlite:///{tmp_path_factory.mktemp('policy') / 'store.db'}" if request.param == "sqlite"
           else f"{PG_URL}?schema={schema}")
    store = open_store(url)
    token = new_token()
    store.save_client(ApiClient("district-a", ("system/*.rs",), datetime.now(UTC), policy=POLICY),
                      hash_token(token))
    with store.transaction() as tx:
        for resource in SEED:
            tx.update(dict(resource))
    try:
        app = create_app(Settings(store_url=url, rate_limit=MACHINE_SPEED_LIMITS), store=store)
        with LiveServer(app) as server, httpx.Client(
            base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            yield client
    finally:
        store.close()
        if request.param == "postgresql":
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def check(response: httpx.Response, what: Any) -> None:
    assert response.status_code < 500, (what, response.text[:300])
    assert "HIDDEN" not in response.text.replace("HIDDEN-", "") or response.status_code >= 400, what
    if response.status_code == 200:
        shown = refs_in(response.json())
        assert shown <= ALLOWED, (what, shown - ALLOWED)


@FUZZ
@given(query=queries(), post=st.booleans())
def test_no_search_shows_a_row_the_policy_hides(district_client: httpx.Client, query: Any, post: bool) -> None:
    rtype, pairs = query
    if post:
        response = district_client.post(f"/fhir/{rtype}/_search", content=urlencode(pairs).encode(),
                                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    else:
        response = district_client.get(f"/fhir/{rtype}", params=pairs)
    check(response, (rtype, pairs))
    body = response.json() if response.status_code == 200 else {}
    for link in body.get("link", []):
        if link["relation"] == "next":  # the next page obeys the policy too
            check(district_client.get(link["url"]), (rtype, pairs, "next"))


def test_the_fuzzer_reaches_hidden_data_without_a_policy(tmp_path: Path) -> None:
    """Control: the same kind of query does find hidden rows for a client without a policy."""
    store = open_store(f"sqlite:///{tmp_path}/control.db")
    with store.transaction() as tx:
        for resource in SEED:
            tx.update(dict(resource))
    token = new_token()
    store.save_client(ApiClient("all", ("system/*.rs",), datetime.now(UTC)), hash_token(token))
    try:
        settings = Settings(store_url=f"sqlite:///{tmp_path}/control.db", rate_limit=MACHINE_SPEED_LIMITS)
        with LiveServer(create_app(settings, store=store)) as server:
            got = httpx.get(f"{server.url}/fhir/Observation", params=[("_include", "Observation:performer")],
                            headers={"Authorization": f"Bearer {token}"}).json()
            assert refs_in(got) - ALLOWED
    finally:
        store.close()
