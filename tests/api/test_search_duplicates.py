"""A resource matching one search parameter through several paths is one match (issue 12, finding 6).

``name=Thabo`` used to answer ``total: 2`` with one entry, and the same Patient on page 1
and page 2 with ``_count=1``, because ``name.text`` and ``name.given`` both held "Thabo".
The test below does not list parameters by hand: for every string and token parameter
of the seeded types, it searches every value the resource is indexed under, and checks
totals and paging against the distinct resources returned.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.search import default_registry, index_rows
from gateway.settings import Settings
from tests.conftest import ApiHarness
from tests.support.gateway_app import MACHINE_SPEED_LIMITS

PATIENT: dict[str, Any] = {
    "resourceType": "Patient", "id": "thabo",
    "name": [{"text": "Thabo Nkosi", "given": ["Thabo"], "family": "Nkosi"}, {"given": ["Thabo"], "use": "old"}],
    "telecom": [{"system": "phone", "value": "+27 82 555 0100"}, {"system": "sms", "value": "+27 82 555 0100"}],
    "identifier": [{"system": "urn:za:nid", "value": "8001015009087"}, {"system": "urn:cht", "value": "8001015009087"}],
    "address": [{"text": "Soweto", "city": "Soweto", "district": "Soweto", "line": ["12 Vilakazi St"]}],
    "gender": "male", "birthDate": "1980-01-01",
}
PRACTITIONER: dict[str, Any] = {
    "resourceType": "Practitioner", "id": "chw1",
    "name": [{"text": "Lerato", "given": ["Lerato"]}], "address": [{"city": "Soweto", "district": "Soweto"}],
    "telecom": [{"system": "phone", "value": "100"}, {"system": "phone", "value": "100", "use": "work"}],
}
OTHER = {"resourceType": "Patient", "id": "other", "name": [{"given": ["Sipho"]}]}


@pytest.fixture
def settings(store_url: str) -> Settings:
    """The API on each store backend."""
    return Settings(store_url=store_url, rate_limit=MACHINE_SPEED_LIMITS)


def searches(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """(parameter, value) for every string/token value the resource is indexed under."""
    params = [p for p in default_registry().indexed(resource["resourceType"]) if p.type in ("string", "token")]
    rows = index_rows(resource, params)
    found = {(code, exact) for code, _norm, exact in rows.string}
    found |= {(code, f"{system}|{value}" if system else value) for code, system, value in rows.token}
    return sorted(found)


async def test_every_multi_path_match_is_one_entry_and_pages_do_not_repeat(api: ApiHarness) -> None:
    for resource in (PATIENT, PRACTITIONER, OTHER):
        response = await api.client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code == 201, response.text
    checked = 0
    for resource in (PATIENT, PRACTITIONER):
        rtype = resource["resourceType"]
        for param, value in searches(resource):
            body = (await api.client.get(f"/fhir/{rtype}", params={param: value})).json()
            ids = [e["resource"]["id"] for e in body.get("entry", [])]
            assert len(ids) == len(set(ids)) == body["total"], (param, value, body["total"], ids)
            assert resource["id"] in ids, (param, value)
            paged: list[str] = []
            for offset in range(body["total"] + 1):
                page = (await api.client.get(f"/fhir/{rtype}", params={param: value, "_count": "1",
                                                                         "_offset": str(offset)})).json()
                paged += [e["resource"]["id"] for e in page.get("entry", [])]
            assert paged == ids, (param, value)
            checked += 1
    assert checked > 20  # the generator found the values it should (name, telecom, identifier, address, …)
