"""The de-identified export (``_deidentify=research``): no direct identifier of the seed survives
anywhere in the output, references still resolve inside it, pseudonyms and date shifts are the
same across exports, and the very old lose their birth date. Both store backends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.api.app import create_app
from gateway.fhir import DeidentifyRules, RulesError
from gateway.settings import Settings
from gateway.store import open_store
from tests.conftest import ApiHarness
from tests.export.helpers import ASYNC, download, kick_off, seed, wait_done
from tests.export.test_bulk_export import export_settings
from tests.support.schema_oracle import default_oracle

# Every direct identifier the seed holds; none may appear in a de-identified export.
PEOPLE = [
    # id, national id, phone, family, given, birth date, address line, city
    ("p1", "NID-19840317-001", "+250788123456", "Uwamahoro", "Claudine", "1984-03-17", "KG 7 Ave 12", "Kimironko"),
    ("p2", "NID-19710922-002", "+250722654321", "Habyarimana", "Jean-Bosco", "1971-09-22", "Plot 44 Rue", "Nyamata"),
    ("p3", "NID-19300105-003", "+250733000111", "Mukashyaka", "Odette", "1930-01-05", "Umudugudu Rwezamenyo",
     "Muhanga"),
]
SECRETS = [value for person in PEOPLE for value in person[1:]]
NOTE = "Claudine said her neighbour Bosco drinks"


def _people() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for pid, nid, phone, family, given, birth, line, city in PEOPLE:
        out.append({
            "resourceType": "Patient", "id": pid,
            "identifier": [{"system": "urn:rw:nid", "value": nid}],
            "name": [{"family": family, "given": [given], "text": f"{given} {family}"}],
            "telecom": [{"system": "phone", "value": phone}],
            "birthDate": birth, "gender": "female",
            "address": [{"line": [line], "city": city, "district": "Gasabo", "country": "RW"}],
            "contact": [{"name": {"family": family}, "telecom": [{"system": "phone", "value": phone}]}],
            "text": {"status": "generated", "div": f"<div xmlns=\"http://www.w3.org/1999/xhtml\">{given}</div>"},
        })
        out.append({
            "resourceType": "Observation", "id": f"{pid}-weight", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": f"Patient/{pid}", "display": f"{given} {family}"},
            "encounter": {"reference": f"Encounter/{pid}-visit"},
            "effectiveDateTime": "2024-03-01T10:00:00Z", "note": [{"text": NOTE}],
            "valueQuantity": {"value": 61.5, "unit": "kg"},
        })
        out.append({
            "resourceType": "Encounter", "id": f"{pid}-visit", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
            "subject": {"reference": f"Patient/{pid}"}, "period": {"start": "2024-03-01", "end": "2024-03-01"},
            "identifier": [{"value": f"visit-of-{nid}"}],
        })
        out.append({
            "resourceType": "Observation", "id": f"{pid}-remark", "status": "final",
            "code": {"text": "remark"}, "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": "2024-03-02", "valueString": f"called {phone}",
        })
    return out


@pytest.fixture
def settings(store_url: str, tmp_path: Path) -> Settings:
    return export_settings(store_url, tmp_path)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[ApiHarness]:
    store = open_store(settings.store_url)
    seed(store, _people())
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        harness = ApiHarness(app, store)
        yield harness
        await harness.aclose()
    store.close()


async def _raw_export(api: ApiHarness, **params: Any) -> tuple[bytes, dict[str, list[dict[str, Any]]]]:
    client = api.with_scopes("system/*.rs")
    manifest = await wait_done(client, await kick_off(client, **params))
    raw = b""
    for item in manifest["output"]:
        raw += (await client.get(item["url"])).content
    return raw, await download(client, manifest)


async def test_no_direct_identifier_survives_and_references_resolve(api: ApiHarness) -> None:
    plain, _ = await _raw_export(api)
    assert all(secret.encode() in plain for secret in SECRETS)  # the seed does hold them
    raw, exported = await _raw_export(api, _deidentify="research")
    text = raw.decode()
    leaked = [secret for secret in [*SECRETS, NOTE, "Claudine", "visit-of"] if secret in text]
    assert leaked == []
    for pid, *_ in PEOPLE:
        assert pid not in {r["id"] for rs in exported.values() for r in rs}
    exported_refs = {f"{r['resourceType']}/{r['id']}" for rs in exported.values() for r in rs}
    references = [o["subject"]["reference"] for o in exported["Observation"]]
    references += [o["encounter"]["reference"] for o in exported["Observation"] if "encounter" in o]
    references += [e["subject"]["reference"] for e in exported["Encounter"]]
    assert references and set(references) <= exported_refs
    assert all("display" not in o["subject"] for o in exported["Observation"])
    assert all("valueString" not in o for o in exported["Observation"])
    oracle = default_oracle()
    for resources in exported.values():
        for resource in resources:
            oracle.assert_valid(resource, resource["resourceType"])


async def test_pseudonyms_and_date_shifts_are_stable_and_per_patient(api: ApiHarness) -> None:
    _, first = await _raw_export(api, _deidentify="research")
    _, second = await _raw_export(api, _deidentify="research")
    assert orjson.dumps(first, option=orjson.OPT_SORT_KEYS) == orjson.dumps(second, option=orjson.OPT_SORT_KEYS)
    by_id = {o["id"]: o for o in first["Observation"]}
    shifts = {}
    for enc in first["Encounter"]:
        patient = enc["subject"]["reference"]
        shift = (date.fromisoformat(enc["period"]["start"]) - date(2024, 3, 1)).days
        assert -180 <= shift <= 180
        shifts[patient] = shift
        # The patient's other records moved by the same number of days.
        weights = [o for o in by_id.values() if o["subject"]["reference"] == patient and "valueQuantity" in o]
        (weight,) = weights
        assert weight["effectiveDateTime"].endswith("T10:00:00Z")
        assert (date.fromisoformat(weight["effectiveDateTime"][:10]) - date(2024, 3, 1)).days == shift
    assert len(set(shifts.values())) > 1  # per patient, not one offset for all
    births = {f"Patient/{p['id']}": p.get("birthDate") for p in first["Patient"]}
    assert sorted(b for b in births.values() if b is not None) != []
    assert all(b is None or len(b) == 4 for b in births.values())
    assert sum(b is None for b in births.values()) == 1  # born 1930: over 89, no birth date at all
    assert all(p["address"] == [{"district": "Gasabo", "country": "RW"}] for p in first["Patient"])


async def test_another_key_gives_other_pseudonyms(store_url: str, tmp_path: Path) -> None:
    exported = []
    for key in ("a" * 40, "b" * 40):
        settings = export_settings(store_url, tmp_path, deidentify_key=key)
        store = open_store(store_url)
        seed(store, _people())
        app = create_app(settings, store=store)
        async with app.router.lifespan_context(app):
            harness = ApiHarness(app, store)
            _, out = await _raw_export(harness, _deidentify="research", _type="Patient")
            exported.append({p["id"] for p in out["Patient"]})
            await harness.aclose()
        store.close()
    assert len(exported[0]) == 3 and not exported[0] & exported[1]


async def test_without_a_key_the_deidentified_export_is_refused(store_url: str, tmp_path: Path) -> None:
    settings = Settings(store_url=store_url, bulk_export={"directory": tmp_path})
    store = open_store(store_url)
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        harness = ApiHarness(app, store)
        client = harness.with_scopes("system/*.rs")
        response = await client.get("/fhir/$export", params={"_deidentify": "research"}, headers=ASYNC)
        assert response.status_code == 400 and "deidentify_key" in response.json()["issue"][0]["diagnostics"]
        await harness.aclose()
    store.close()


@pytest.mark.parametrize("data, key", [
    ({"name": "x", "colour": "red"}, "colour"),
    ({"name": "x", "remove": "identifier"}, "remove"),
    ({"name": "x", "dates": {"shift_days": -3}}, "dates.shift_days"),
    ({"name": "x", "dates": {"birth_date": "decade"}}, "dates.birth_date"),
    ({"name": "x", "ids": "hash"}, "ids"),
    ({"remove": []}, "name"),
])  # fmt: skip
def test_a_rule_file_that_cannot_be_understood_names_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(RulesError, match=key.replace(".", r"\.")):
        DeidentifyRules.from_mapping(data)
