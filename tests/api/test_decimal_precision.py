"""FHIR decimals keep the literal the client sent (``5.40`` reads back as ``5.40``), on every path out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from gateway.api.app import create_app
from gateway.settings import Settings
from gateway.store import Store
from tests.conftest import ApiHarness
from tests.export.helpers import kick_off, wait_done

#: Literals a float would rewrite (5.4, 150.0, 0.1) and one it keeps.
LITERALS = (b"5.40", b"1.50E2", b"0.1000000000000000055511151231257827", b"2.5")

OBSERVATION = (
    b'{"resourceType":"Observation","id":"o1","status":"final",'
    b'"code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},'
    b'"subject":{"reference":"Patient/p1"},'
    b'"valueQuantity":{"value":5.40,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"},'
    b'"component":[{"code":{"text":"a"},"valueQuantity":{"value":1.50E2}},'
    b'{"code":{"text":"b"},"valueQuantity":{"value":0.1000000000000000055511151231257827}},'
    b'{"code":{"text":"c"},"valueInteger":7},{"code":{"text":"d"},"valueQuantity":{"value":2.5}}]}'
)
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
async def api_on(store_url: str, store: Store) -> AsyncIterator[ApiHarness]:
    """The app in-process on each store backend."""
    settings = Settings(store_url=store_url, allowed_hosts=["gateway.test"])
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        harness = ApiHarness(app, store)
        yield harness
        await harness.aclose()


def keeps_literals(response: httpx.Response, *literals: bytes) -> None:
    assert response.status_code in (200, 201), response.text[:500]
    for literal in literals or LITERALS:
        assert literal in response.content, (literal, response.content[:1000])
    assert b'"valueInteger":7' in response.content or b'"valueInteger"' not in response.content


async def test_decimals_keep_their_literal_on_every_read(api_on: ApiHarness) -> None:
    c = api_on.client
    assert (await c.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})).status_code == 201
    keeps_literals(await c.put("/fhir/Observation/o1", content=OBSERVATION, headers=FHIR))
    created = await c.post("/fhir/Observation", content=OBSERVATION, headers=FHIR)
    keeps_literals(created)
    keeps_literals(await c.get("/fhir/Observation/o1"))
    keeps_literals(await c.get("/fhir/Observation/o1/_history/1"))
    keeps_literals(await c.get("/fhir/Observation", params={"value-quantity": "5.4"}))
    keeps_literals(await c.get("/fhir/Observation", params={"_id": "o1", "_elements": "component"}), *LITERALS[1:])
    keeps_literals(await c.get("/fhir/Observation/o1", params={"_elements": "valueQuantity"}), b"5.40")
    keeps_literals(await c.get("/fhir/Observation", params={"_summary": "data", "_id": "o1"}))
    keeps_literals(await c.get("/fhir/Patient/p1/$everything"))

    patch = b'[{"op":"replace","path":"/valueQuantity/value","value":7.10}]'
    patched = await c.patch("/fhir/Observation/o1", content=patch,
                            headers={"Content-Type": "application/json-patch+json"})
    keeps_literals(patched, b"7.10", *LITERALS[1:])
    keeps_literals(await c.get("/fhir/Observation/o1/_history"), b"7.10", *LITERALS)
    keeps_literals(await c.get("/fhir/_history"), b"7.10", *LITERALS)

    bundle = (b'{"resourceType":"Bundle","type":"transaction","entry":[{"resource":' + OBSERVATION.replace(
        b'"id":"o1",', b"") + b',"request":{"method":"POST","url":"Observation"}},'
        b'{"request":{"method":"GET","url":"Observation/o1"}}]}')
    keeps_literals(await c.post("/fhir", content=bundle, headers=FHIR), b"7.10", *LITERALS)
    keeps_literals(await c.post("/fhir", content=bundle.replace(b'"transaction"', b'"batch"'), headers=FHIR),
                   b"7.10", *LITERALS)
    batch_get = (b'{"resourceType":"Bundle","type":"batch","entry":['
                 b'{"request":{"method":"GET","url":"Observation?_id=o1&_elements=valueQuantity"}}]}')
    keeps_literals(await c.post("/fhir", content=batch_get, headers=FHIR), b"7.10")

    manifest = await wait_done(c, await kick_off(c, _type="Observation"))
    for item in manifest["output"]:
        keeps_literals(await c.get(item["url"], headers={"Accept": "application/fhir+ndjson"}), b"7.10", *LITERALS)


async def test_float_precise_inputs_are_unchanged(api_on: ApiHarness) -> None:
    """Values a float keeps exactly come back byte for byte, integers stay integers."""
    c = api_on.client
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "valueQuantity": {"value": 5.4}, "component": [{"code": {"text": "n"}, "valueInteger": 12}]}
    created = await c.post("/fhir/Observation", content=orjson.dumps(body), headers=FHIR)
    assert created.status_code == 201
    assert b'"value":5.4}' in created.content and b'"valueInteger":12}' in created.content
