"""fhir.md §6 D–G: search envelope, errors, dates, tokens, strings, references, modifiers, paging.

Each test makes its own patients under a fresh identifier system and narrows every search
with ``identifier=<system>|``, so tests share one server without seeing each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conformance.conftest import Served

Maker = Callable[..., str]


@pytest.fixture
def system() -> str:
    return f"urn:test:search:{uuid.uuid4().hex}"


@pytest.fixture
def make(fhir: httpx.Client, system: str) -> Maker:
    """Create a resource tagged with this test's identifier system; return its id."""

    def create(rtype: str = "Patient", **fields: Any) -> str:
        body = {
            "resourceType": rtype,
            "identifier": [{"system": system, "value": uuid.uuid4().hex}],
            **fields,
        }
        response = fhir.post(f"/{rtype}", json=body, headers={"Prefer": "return=representation"})
        assert response.status_code == 201, response.text
        rid: str = response.json()["id"]
        return rid

    return create


def ids(fhir: httpx.Client, rtype: str, system: str, **params: Any) -> set[str]:
    bundle = fhir.get(f"/{rtype}", params={"identifier": f"{system}|", "_count": 100, **params}).json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


# -- D. envelope and errors ----------------------------------------------------------------


def test_23_searchset_envelope(fhir: httpx.Client, served: Served, make: Maker, system: str) -> None:
    rid = make(name=[{"family": "Envelope"}])
    bundle = fhir.get("/Patient", params={"identifier": f"{system}|", "family": "Envelope"}).json()
    assert bundle["type"] == "searchset" and [e["resource"]["id"] for e in bundle["entry"]] == [rid]
    entry = bundle["entry"][0]
    assert entry["fullUrl"] == f"{served.base}/Patient/{rid}" and entry["search"]["mode"] == "match"
    assert any(link["relation"] == "self" for link in bundle["link"])


def test_24_unknown_parameters_are_ignored_and_left_out_of_self(
    fhir: httpx.Client, make: Maker, system: str
) -> None:
    rid = make()
    response = fhir.get(
        "/Patient", params={"identifier": f"{system}|", "bogus": "1", "_totalMethod": "count"}
    )
    bundle = response.json()
    matches = {e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"}
    assert matches == {rid}  # an OperationOutcome entry (search.mode=outcome) may warn about bogus
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert "bogus" not in self_link and "_totalMethod" not in self_link
    strict = fhir.get("/Patient", params={"bogus": "1"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400


def test_25_unsupported_modifier_is_400(fhir: httpx.Client) -> None:
    assert fhir.get("/Patient", params={"family:sounds-like": "x"}).status_code == 400


@pytest.mark.parametrize(
    "params", [{"birthdate": "notadate"}, {"_count": "abc"}, {"birthdate": "gt2024-13-01"}, {"_count": "-1"}]
)
def test_26_and_46_malformed_values_are_400(fhir: httpx.Client, params: dict[str, str]) -> None:
    assert fhir.get("/Patient", params=params).status_code == 400


def test_27_counting(fhir: httpx.Client, make: Maker, system: str) -> None:
    for _ in range(3):
        make()
    for params in ({"_summary": "count"}, {"_count": "0"}):
        bundle = fhir.get("/Patient", params={"identifier": f"{system}|", **params}).json()
        assert bundle["total"] == 3 and not bundle.get("entry")
    assert (
        fhir.get("/Patient", params={"identifier": f"{system}|", "_total": "accurate", "_count": 1}).json()[
            "total"
        ]
        == 3
    )


def test_28_post_search_matches_get(fhir: httpx.Client, make: Maker, system: str) -> None:
    wanted = {make(gender="male"), make(gender="male")}
    make(gender="female")
    form = {"identifier": f"{system}|", "gender": "male"}
    posted = fhir.post("/Patient/_search", data=form).json()
    assert (
        {e["resource"]["id"] for e in posted["entry"]}
        == wanted
        == ids(fhir, "Patient", system, gender="male")
    )


def test_29_and_or_semantics(fhir: httpx.Client, make: Maker, system: str) -> None:
    smith = make(name=[{"family": "Smith"}], birthDate="1975-06-01")
    jones = make(name=[{"family": "Jones"}], birthDate="1985-06-01")
    make(name=[{"family": "Brown"}], birthDate="1975-01-01")
    assert ids(fhir, "Patient", system, family="Smith,Jones") == {smith, jones}
    got = fhir.get(
        "/Patient", params=[("identifier", f"{system}|"), ("birthdate", "ge1970"), ("birthdate", "lt1980")]
    )
    assert len(got.json()["entry"]) == 2
    assert ids(fhir, "Patient", system, _id=f"{smith},{jones}") == {smith, jones}


# -- E. dates -------------------------------------------------------------------------------------


@pytest.fixture
def births(make: Maker) -> dict[str, str]:
    return {
        value: make(birthDate=value)
        for value in ("1980", "1980-05", "1980-05-17", "1981-02-03", "1990-01-01")
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("1980", {"1980", "1980-05", "1980-05-17"}),
        ("1980-05", {"1980-05", "1980-05-17"}),
        ("1980-05-17", {"1980-05-17"}),
        ("gt1980-05-17", {"1980", "1980-05", "1981-02-03", "1990-01-01"}),
        ("ge1980-05-17", {"1980", "1980-05", "1980-05-17", "1981-02-03", "1990-01-01"}),
        ("lt1980-05-17", {"1980", "1980-05"}),
        ("le1980-05-17", {"1980", "1980-05", "1980-05-17"}),
        ("ne1980-05-17", {"1980", "1980-05", "1981-02-03", "1990-01-01"}),
        ("sa1980-12-31", {"1981-02-03", "1990-01-01"}),
        ("eb1981", {"1980", "1980-05", "1980-05-17"}),
    ],
)
def test_30_to_32_date_ranges(
    fhir: httpx.Client, system: str, births: dict[str, str], query: str, expected: set[str]
) -> None:
    assert ids(fhir, "Patient", system, birthdate=query) == {births[v] for v in expected}


def test_32_approximate_is_accepted(fhir: httpx.Client, system: str, births: dict[str, str]) -> None:
    assert (
        fhir.get("/Patient", params={"identifier": f"{system}|", "birthdate": "ap1980-05-17"}).status_code
        == 200
    )


def test_33_time_zones_and_open_periods(fhir: httpx.Client, make: Maker, system: str) -> None:
    def observation(**fields: Any) -> str:
        return make("Observation", status="final", code={"text": "tz"}, **fields)

    plus_one = observation(effectiveDateTime="2024-03-01T10:00:00+01:00")
    utc = observation(effectiveDateTime="2024-03-01T10:00:00Z")
    open_ended = observation(effectivePeriod={"start": "2020-01-01"})
    assert ids(fhir, "Observation", system, date="gt2024-03-01T09:00:00Z") == {utc, open_ended}
    assert open_ended in ids(fhir, "Observation", system, date="ge2999-01-01")
    assert plus_one not in ids(fhir, "Observation", system, date="ge2999-01-01")


def test_34_last_updated(fhir: httpx.Client, make: Maker, system: str) -> None:
    make()
    marker = fhir.get("/Patient", params={"_id": make()}).json()["entry"][0]["resource"]["meta"][
        "lastUpdated"
    ]
    later = make()
    assert ids(fhir, "Patient", system, _lastUpdated=f"gt{marker}") == {later}


# -- F. token, string, reference, modifiers ----------------------------------------------------------


def test_35_tokens(fhir: httpx.Client, make: Maker, system: str) -> None:
    other = f"{system}-other"
    a = make(identifier=[{"system": system, "value": "tok"}], gender="male")
    b = make(
        identifier=[{"system": system, "value": "x"}, {"system": other, "value": "tok"}], gender="female"
    )
    c = make(identifier=[{"system": system, "value": "y"}, {"value": "tok"}])
    search = {"_count": 100}

    def found(**params: str) -> set[str]:
        entries = fhir.get("/Patient", params={**search, **params}).json().get("entry", [])
        return {e["resource"]["id"] for e in entries}

    assert found(identifier=f"{system}|tok") == {a}
    assert {a, b, c} <= found(identifier="tok")
    assert c in found(identifier="|tok") and a not in found(identifier="|tok")
    assert found(identifier=f"{other}|") == {b}
    assert ids(fhir, "Patient", system, gender="male") == {a}
    assert ids(fhir, "Patient", system, **{"gender:not": "male"}) == {b, c}


def test_36_strings(fhir: httpx.Client, make: Maker, system: str) -> None:
    smith = make(name=[{"family": "Smith", "given": ["Anna"]}])
    zoe = make(name=[{"family": "Zoë"}])
    assert ids(fhir, "Patient", system, family="smi") == {smith}
    assert ids(fhir, "Patient", system, family="zoe") == {zoe}
    assert ids(fhir, "Patient", system, **{"family:exact": "smith"}) == set()
    assert ids(fhir, "Patient", system, **{"family:exact": "Smith"}) == {smith}
    assert ids(fhir, "Patient", system, **{"family:contains": "mit"}) == {smith}
    assert ids(fhir, "Patient", system, name="anna") == {smith}


def test_37_references(fhir: httpx.Client, served: Served, make: Maker, system: str) -> None:
    patient = make()
    observation = make(
        "Observation", status="final", code={"text": "ref"}, subject={"reference": f"Patient/{patient}"}
    )
    make("Observation", status="final", code={"text": "ref"}, subject={"reference": "Patient/someone-else"})
    for params in (
        {"subject": f"Patient/{patient}"},
        {"subject": f"{served.base}/Patient/{patient}"},
        {"patient": patient},
        {"subject:Patient": patient},
    ):
        assert ids(fhir, "Observation", system, **params) == {observation}, params


def test_38_missing(fhir: httpx.Client, make: Maker, system: str) -> None:
    with_date = make(birthDate="2000-01-01")
    without = make()
    assert ids(fhir, "Patient", system, **{"birthdate:missing": "true"}) == {without}
    assert ids(fhir, "Patient", system, **{"birthdate:missing": "false"}) == {with_date}


def test_39_to_41_chains_has_and_includes(fhir: httpx.Client, make: Maker, system: str) -> None:
    smith = make(name=[{"family": "Chainsmith"}])
    other = make(name=[{"family": "Other"}])
    code = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
    obs = make("Observation", status="final", code=code, subject={"reference": f"Patient/{smith}"})
    make("Observation", status="final", code={"text": "x"}, subject={"reference": f"Patient/{other}"})
    assert ids(fhir, "Observation", system, **{"subject:Patient.name": "Chainsmith"}) == {obs}
    assert ids(fhir, "Observation", system, **{"patient.family": "Chainsmith"}) == {obs}
    assert ids(fhir, "Patient", system, **{"_has:Observation:patient:code": "8867-4"}) == {smith}
    bundle = fhir.get(
        "/Observation", params={"identifier": f"{system}|", "_include": "Observation:subject", "_count": 100}
    ).json()
    included = [e for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert sorted(e["resource"]["id"] for e in included) == sorted({smith, other})
    assert bundle.get("total", 2) == 2


def test_42_sort(fhir: httpx.Client, make: Maker, system: str) -> None:
    for year in ("1990", "1970", "1980"):
        make(birthDate=f"{year}-01-01", name=[{"family": "Sorter"}])
    bundle = fhir.get("/Patient", params={"identifier": f"{system}|", "_sort": "-birthdate"}).json()
    years = [e["resource"]["birthDate"][:4] for e in bundle["entry"]]
    assert years == ["1990", "1980", "1970"]
    legacy = fhir.get("/Patient", params={"identifier": f"{system}|", "_sort:desc": "birthdate"})
    assert legacy.status_code in (200, 400)


def test_43_summary_and_elements(fhir: httpx.Client, make: Maker, system: str) -> None:
    make(name=[{"family": "Subset"}], gender="female", birthDate="2001-01-01")
    bundle = fhir.get("/Patient", params={"identifier": f"{system}|", "_elements": "name"}).json()
    resource = bundle["entry"][0]["resource"]
    assert "name" in resource and "gender" not in resource and resource["id"]
    assert any(t.get("code") == "SUBSETTED" for t in resource["meta"].get("tag", []))


# -- G. paging ----------------------------------------------------------------------------------------


def test_44_45_paging_covers_every_match_once(
    fhir: httpx.Client, served: Served, make: Maker, system: str
) -> None:
    created = {make() for _ in range(23)}
    url: str | None = f"{served.base}/Patient?identifier={system}|&_count=5"
    seen: list[str] = []
    totals = set()
    while url:
        assert url.startswith(served.base + "/Patient?"), url
        bundle = fhir.get(url).json()
        assert len(bundle.get("entry", [])) <= 5
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        totals.add(bundle.get("total"))
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        if url:  # Medplum replays only the query string against [base]/[type]: that must work too
            replay = f"{served.base}/Patient?" + urlsplit(url).query
            assert parse_qs(urlsplit(replay).query) == parse_qs(urlsplit(url).query)
    assert sorted(seen) == sorted(created) and totals == {23}


def test_46_count_is_capped(fhir: httpx.Client, make: Maker, system: str) -> None:
    make()
    assert fhir.get("/Patient", params={"identifier": f"{system}|", "_count": "100000"}).status_code == 200
