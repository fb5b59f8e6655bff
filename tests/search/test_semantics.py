"""FHIR search semantics (search.html), checked on both store backends."""

from __future__ import annotations

import pytest

from gateway.search.code_systems import implied_systems
from gateway.search.dates import date_range
from gateway.search.extract import index_rows
from gateway.search.query import QueryParser, SearchError, TokenValue
from gateway.search.registry import default_registry
from gateway.store.sql import ITERATE_ROUNDS, SqlStore

PARSER = QueryParser(default_registry(), 50, 1000)
BIRTH_DATES = {"y": "1980", "m": "1980-05", "d": "1980-05-17", "later": "1981-02-03", "late": "1990-01-01"}


@pytest.fixture
def people(store: SqlStore) -> dict[str, str]:
    """Patients keyed by a short name; values are ids."""
    ids: dict[str, str] = {}
    with store.transaction() as tx:
        for key, birth in BIRTH_DATES.items():
            ids[key] = tx.create({"resourceType": "Patient", "birthDate": birth}).resource.id
        ids["smith"] = tx.create({"resourceType": "Patient", "gender": "male",
                                  "name": [{"family": "Smith", "given": ["John"]}],
                                  "identifier": [{"system": "urn:a", "value": "v1"}, {"value": "bare"}],
                                  "address": [{"district": "Kilifi"}]}).resource.id
        ids["zoe"] = tx.create({"resourceType": "Patient", "gender": "female", "name": [{"family": "Zoë"}],
                                "identifier": [{"system": "urn:b", "value": "v1"}]}).resource.id
    return ids


def find(store: SqlStore, rtype: str, *items: tuple[str, str]) -> set[str]:
    return {r.id for r in store.search(PARSER.parse(rtype, list(items))).resources}


def keys(people: dict[str, str], found: set[str]) -> set[str]:
    return {k for k, v in people.items() if v in found}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1980", {"y", "m", "d"}),
        ("1980-05", {"m", "d"}),
        ("1980-05-17", {"d"}),
        ("gt1980-05-17", {"y", "m", "later", "late"}),
        ("ge1980-05-17", {"y", "m", "d", "later", "late"}),
        ("lt1980-05-17", {"y", "m"}),
        ("le1980-05-17", {"y", "m", "d"}),
        ("ne1980-05-17", {"y", "m", "later", "late"}),
        ("sa1980-12-31", {"later", "late"}),
        ("eb1981", {"y", "m", "d"}),
    ],
)
def test_date_prefixes_follow_range_semantics(
    store: SqlStore, people: dict[str, str], value: str, expected: set[str]
) -> None:
    assert keys(people, find(store, "Patient", ("birthdate", value))) == expected


def test_repeated_parameters_and_and_commas_or(store: SqlStore, people: dict[str, str]) -> None:
    both = find(store, "Patient", ("birthdate", "ge1980"), ("birthdate", "lt1981"))
    assert keys(people, both) == {"y", "m", "d"}
    assert keys(people, find(store, "Patient", ("family", "Smith,Zoe"))) == {"smith", "zoe"}
    assert keys(people, find(store, "Patient", ("_id", f"{people['y']},{people['late']}"))) == {"y", "late"}


def test_token_system_forms(store: SqlStore, people: dict[str, str]) -> None:
    assert keys(people, find(store, "Patient", ("identifier", "urn:a|v1"))) == {"smith"}
    assert keys(people, find(store, "Patient", ("identifier", "v1"))) == {"smith", "zoe"}
    assert keys(people, find(store, "Patient", ("identifier", "|bare"))) == {"smith"}
    assert keys(people, find(store, "Patient", ("identifier", "urn:b|"))) == {"zoe"}
    assert keys(people, find(store, "Patient", ("gender", "male"))) == {"smith"}
    not_male = keys(people, find(store, "Patient", ("gender:not", "male")))
    assert not_male == {"zoe", *BIRTH_DATES}  # :not includes resources without a gender
    # A code's system is its binding's (search.html): named, it matches as the bare code does.
    gender = "http://hl7.org/fhir/administrative-gender"
    assert keys(people, find(store, "Patient", ("gender", f"{gender}|male"))) == {"smith"}
    assert keys(people, find(store, "Patient", ("gender", f"{gender}|male,{gender}|female"))) == {"smith", "zoe"}
    assert keys(people, find(store, "Patient", ("gender", f"{gender}|"))) == {"smith", "zoe"}
    assert keys(people, find(store, "Patient", ("gender:not", f"{gender}|male"))) == not_male
    assert find(store, "Patient", ("gender", "http://example.org/sex|male")) == set()  # another system
    # Identifiers carry their own systems: nothing is implied for them.
    assert find(store, "Patient", ("identifier", f"{gender}|v1")) == set()


def test_empty_result_parameters_are_not_there() -> None:
    """search.html: a parameter with an empty value is ignored, result parameters too."""
    plain = PARSER.parse("Patient", [])
    empty = PARSER.parse("Patient", [(k, "") for k in ("_count", "_sort", "_include", "_total", "_summary", "gender")])
    assert (empty.count, empty.sort, empty.includes, empty.total, empty.criteria) == (
        plain.count, plain.sort, plain.includes, plain.total, plain.criteria)


def test_a_code_elements_implied_system_comes_from_its_binding() -> None:
    registry = default_registry()
    assert implied_systems("Patient", registry.params("Patient")["gender"]) == {
        "http://hl7.org/fhir/administrative-gender"}
    # Immunization.status is bound to a value set drawing from event-status, not "immunization-status".
    assert implied_systems("Immunization", registry.params("Immunization")["status"]) == {
        "http://hl7.org/fhir/event-status"}
    assert implied_systems("Observation", registry.params("Observation")["code"]) == frozenset()
    parsed = PARSER.parse("Observation", [("status", "http://hl7.org/fhir/observation-status|final")])
    assert parsed.criteria[0].values[0] == TokenValue("", "final")


def test_identifier_with_a_use_has_one_row_and_contact_points_keep_their_forms(store: SqlStore) -> None:
    with store.transaction() as tx:
        uid = tx.create({"resourceType": "Patient", "identifier": [
            {"use": "secondary", "system": "urn:uid", "value": "u1"}]}).resource.id  # fmt: skip
        phone = tx.create({"resourceType": "Patient", "telecom": [
            {"use": "home", "system": "phone", "value": "555"}]}).resource.id  # fmt: skip
    assert find(store, "Patient", ("identifier", "urn:uid|u1")) == {uid}
    assert find(store, "Patient", ("identifier", "u1")) == {uid}
    assert find(store, "Patient", ("identifier", "|u1")) == set()  # it has a system
    assert find(store, "Patient", ("telecom", "phone|555")) == {phone}
    assert find(store, "Patient", ("telecom", "555")) == {phone}
    assert find(store, "Patient", ("telecom", "|555")) == {phone}
    rows = index_rows({"resourceType": "Patient", "identifier": [
        {"use": "secondary", "system": "urn:uid", "value": "u1"}]}, default_registry().indexed("Patient"))  # fmt: skip
    assert [r for r in rows.token if r[0] == "identifier"] == [("identifier", "urn:uid", "u1")]


def test_string_matching(store: SqlStore, people: dict[str, str]) -> None:
    assert keys(people, find(store, "Patient", ("family", "smi"))) == {"smith"}
    assert keys(people, find(store, "Patient", ("family", "zoe"))) == {"zoe"}
    assert find(store, "Patient", ("family:exact", "smith")) == set()
    assert keys(people, find(store, "Patient", ("family:exact", "Smith"))) == {"smith"}
    assert keys(people, find(store, "Patient", ("family:contains", "mit"))) == {"smith"}
    assert keys(people, find(store, "Patient", ("name", "john"))) == {"smith"}
    assert keys(people, find(store, "Patient", ("address-district", "kil"))) == {"smith"}


def test_missing_modifier(store: SqlStore, people: dict[str, str]) -> None:
    assert keys(people, find(store, "Patient", ("birthdate:missing", "true"))) == {"smith", "zoe"}
    assert keys(people, find(store, "Patient", ("birthdate:missing", "false"))) == set(BIRTH_DATES)


def test_sorting(store: SqlStore, people: dict[str, str]) -> None:
    query = PARSER.parse("Patient", [("birthdate:missing", "false"), ("_sort", "-birthdate")])
    order = [r.id for r in store.search(query).resources]
    assert order[0] == people["late"] and order[-1] in (people["y"], people["m"], people["d"])
    newest_first = [r.id for r in store.search(PARSER.parse("Patient", [("_sort", "-_lastUpdated")])).resources]
    assert newest_first[0] == people["zoe"]


def test_date_sort_pages_put_missing_values_last(store: SqlStore, people: dict[str, str]) -> None:
    with store.transaction() as tx:
        tx.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
        ids = {"one": tx.create({"resourceType": "Patient", "birthDate": "1985-01-01"}).resource.id}
    # Descending order compares the ends of the ranges the values stand for: "1980" ends last of 1980.
    dates = {people[k]: v for k, v in BIRTH_DATES.items()} | {ids["one"]: "1985-01-01"}
    expected = sorted(dates, key=lambda rid: date_range(dates[rid])[1], reverse=True)
    seen: list[str] = []
    snapshot = None
    for offset in range(0, 12, 3):
        items = [("_sort", "-birthdate"), ("_count", "3"), ("_offset", str(offset))]
        if snapshot is not None:
            items.append(("_snapshot", str(snapshot)))
        result = store.search(PARSER.parse("Patient", items))
        snapshot = result.snapshot
        seen += [r.id for r in result.resources]
    assert seen[:6] == expected
    assert set(seen[6:]) == {people["smith"], people["zoe"]} and len(seen) == 8


def test_time_zones_are_normalised(store: SqlStore) -> None:
    with store.transaction() as tx:
        plus_one = tx.create({"resourceType": "Observation", "status": "final", "code": {"text": "a"},
                              "effectiveDateTime": "2024-03-01T10:00:00+01:00"}).resource.id
        utc = tx.create({"resourceType": "Observation", "status": "final", "code": {"text": "b"},
                         "effectiveDateTime": "2024-03-01T10:00:00Z"}).resource.id
        open_ended = tx.create({"resourceType": "Observation", "status": "final", "code": {"text": "c"},
                                "effectivePeriod": {"start": "2020-01-01"}}).resource.id
    assert find(store, "Observation", ("date", "gt2024-03-01T09:00:00Z")) == {utc, open_ended}
    assert find(store, "Observation", ("date", "ge2999-01-01")) == {open_ended}
    assert plus_one in find(store, "Observation", ("date", "2024-03-01"))


def test_reference_forms_and_chains(store: SqlStore) -> None:
    with store.transaction() as tx:
        pid = tx.create({"resourceType": "Patient", "name": [{"family": "Okoth"}]}).resource.id
        obs = tx.create({"resourceType": "Observation", "status": "final",
                         "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                         "subject": {"reference": f"Patient/{pid}"}}).resource.id
        tx.create({"resourceType": "Observation", "status": "final", "code": {"text": "other"}})
    for item in [("subject", f"Patient/{pid}"), ("subject", f"http://x.test/fhir/Patient/{pid}"),
                 ("patient", pid), ("subject:Patient", pid), ("subject:Patient.name", "okoth"),
                 ("patient.family", "okoth"), ("subject.family", "okoth"), ("code", "http://loinc.org|8867-4")]:
        assert find(store, "Observation", item) == {obs}, item
    assert find(store, "Patient", ("_has:Observation:patient:code", "8867-4")) == {pid}
    result = store.search(PARSER.parse("Observation", [("_id", obs), ("_include", "Observation:subject")]))
    assert [r.id for r in result.included] == [pid]
    result = store.search(PARSER.parse("Patient", [("_id", pid), ("_revinclude", "Observation:subject")]))
    assert [r.id for r in result.included] == [obs]


def test_an_absolute_reference_to_another_server_is_not_a_local_resource(store: SqlStore) -> None:
    """``http://other.example/fhir/Patient/s1`` is someone else's Patient s1: searching, including
    and chaining by the local Patient s1 must not find it (a wrong-patient link)."""
    with store.transaction() as tx:
        tx.update({"resourceType": "Patient", "id": "s1", "name": [{"family": "Okoth"}]})
        foreign = "http://other.example/fhir/Patient/s1"
        away = tx.update({"resourceType": "Observation", "id": "away", "status": "final", "code": {"text": "t"},
                          "subject": {"reference": foreign}}).resource.id
        here = tx.update({"resourceType": "Observation", "id": "here", "status": "final", "code": {"text": "t"},
                          "subject": {"reference": "Patient/s1"}}).resource.id
    for item in [("subject", "Patient/s1"), ("patient", "s1"), ("subject:Patient", "s1"),
                 ("subject.family", "okoth")]:
        assert find(store, "Observation", item) == {here}, item
    assert find(store, "Observation", ("subject", foreign)) >= {away}  # by its own URL
    result = store.search(PARSER.parse("Observation", [("_id", away), ("_include", "Observation:subject")]))
    assert result.included == []
    result = store.search(PARSER.parse("Patient", [("_id", "s1"), ("_revinclude", "Observation:subject")]))
    assert [r.id for r in result.included] == [here]


def test_has_takes_a_modifier_on_its_parameter_and_refuses_a_nested_has_as_not_supported(store: SqlStore) -> None:
    with store.transaction() as tx:
        final = tx.create({"resourceType": "Patient"}).resource.id
        amended = tx.create({"resourceType": "Patient"}).resource.id
        for pid, status in ((final, "final"), (amended, "amended")):
            tx.create({"resourceType": "Observation", "status": status, "code": {"text": "x"},
                       "subject": {"reference": f"Patient/{pid}"}})
    assert find(store, "Patient", ("_has:Observation:subject:status:not", "final")) == {amended}
    assert find(store, "Patient", ("_has:Observation:subject:status:missing", "false")) == {final, amended}
    with pytest.raises(SearchError) as nested:
        PARSER.parse("Patient", [("_has:Observation:subject:_has:Provenance:target:agent", "x")])
    assert nested.value.code == "not-supported"
    for key in ("_has:Observation:subject", "_has::subject:status", "_has:Observation:subject:status:not:x",
                "_has:Bogus:subject:status"):
        with pytest.raises(SearchError) as bad:
            PARSER.parse("Patient", [(key, "x")])
        assert bad.value.code == "invalid" and bad.value.expression == [key], key


def test_a_chain_without_a_type_needs_one_only_when_several_targets_have_the_parameter() -> None:
    """subject.family can only mean a Patient (Group, Device and Location have no family); subject.name
    could mean several, so the client names one."""
    chained = PARSER.parse("Observation", [("subject.family", "okoth")]).criteria[0]
    assert chained.chain is not None and chained.chain[0] == "Patient"
    with pytest.raises(SearchError, match=r"needs a type modifier .*name is a parameter of .*Patient"):
        PARSER.parse("Observation", [("subject.name", "okoth")])
    with pytest.raises(SearchError, match="unknown parameter 'no-such-param'") as unknown:
        PARSER.parse("Observation", [("subject.no-such-param", "x")])  # no target has it: not a type question
    assert unknown.value.expression == ["subject.no-such-param"]


def test_include_iterate_follows_references_from_included_resources(store: SqlStore) -> None:
    """search.html: ``:iterate`` applies an include again to what the includes added, round after round."""
    with store.transaction() as tx:
        tx.update({"resourceType": "Organization", "id": "region", "name": "Region"})
        for level, parent in ((1, "region"), *((n, f"org{n - 1}") for n in range(2, 9))):
            part_of = {"reference": f"Organization/{parent}"}
            tx.update({"resourceType": "Organization", "id": f"org{level}", "partOf": part_of})
        tx.update({"resourceType": "Patient", "id": "pat", "managingOrganization": {"reference": "Organization/org2"}})
        tx.update({"resourceType": "Observation", "id": "obs", "status": "final", "code": {"text": "muac"},
                   "subject": {"reference": "Patient/pat"}})
        tx.update({"resourceType": "Provenance", "id": "prov", "target": [{"reference": "Observation/obs"}],
                   "recorded": "2024-01-01T00:00:00Z", "agent": [{"who": {"display": "chw"}}]})

    def included(rtype: str, *items: tuple[str, str]) -> set[str]:
        return {f"{r.type}/{r.id}" for r in store.search(PARSER.parse(rtype, list(items))).included}

    assert included("Observation", ("_id", "obs"), ("_include", "Observation:subject"),
                    ("_include:iterate", "Patient:organization")) == {"Patient/pat", "Organization/org2"}
    # Each round follows one more reference: org2 -> org1 -> region, then nothing new.
    assert included("Observation", ("_id", "obs"), ("_include", "Observation:subject"),
                    ("_include:iterate", "Patient:organization"), ("_include:iterate", "Organization:partof")) == {
        "Patient/pat", "Organization/org2", "Organization/org1", "Organization/region"}
    assert included("Patient", ("_id", "pat"), ("_revinclude", "Observation:subject"),
                    ("_revinclude:iterate", "Provenance:target")) == {"Observation/obs", "Provenance/prov"}
    # Without :iterate the Provenance of the included Observation is not followed.
    assert included("Patient", ("_id", "pat"), ("_revinclude", "Observation:subject"),
                    ("_revinclude", "Provenance:target")) == {"Observation/obs"}
    # A reference to the searched type itself: the first round applies to the matches too, and the
    # rounds are bounded (org8 -> org7 ... : the first round and ITERATE_ROUNDS more).
    chain = included("Organization", ("_id", "org8"), ("_include:iterate", "Organization:partof"))
    assert chain == {f"Organization/org{n}" for n in range(7 - ITERATE_ROUNDS, 8)}
    assert included("Organization", ("_id", "org6"), ("_revinclude:iterate", "Organization:partof")) == {
        "Organization/org7", "Organization/org8"}
    # Without :iterate an include must start at the searched type; the error says how to iterate.
    with pytest.raises(SearchError, match="_include:iterate=Patient:organization"):
        PARSER.parse("Observation", [("_include", "Patient:organization")])


def test_include_and_revinclude_honour_their_target_type(store: SqlStore) -> None:
    """search.html: ``_revinclude=Observation:subject:Group`` adds Observations whose subject is one of
    the matches *as a Group*; a target type that is not a resource type is an error, not ignored."""
    with store.transaction() as tx:
        tx.update({"resourceType": "Patient", "id": "pat"})
        tx.update({"resourceType": "Observation", "id": "obs", "status": "final", "code": {"text": "muac"},
                   "subject": {"reference": "Patient/pat"}})

    def included(rtype: str, *items: tuple[str, str]) -> set[str]:
        return {f"{r.type}/{r.id}" for r in store.search(PARSER.parse(rtype, list(items))).included}

    assert included("Patient", ("_id", "pat"), ("_revinclude", "Observation:subject:Patient")) == {"Observation/obs"}
    assert included("Patient", ("_id", "pat"), ("_revinclude", "Observation:subject:Group")) == set()
    assert included("Observation", ("_id", "obs"), ("_include", "Observation:subject:Group")) == set()
    for key in ("_include", "_revinclude"):
        with pytest.raises(SearchError, match="Foo"):
            PARSER.parse("Patient" if key == "_revinclude" else "Observation", [(key, "Observation:subject:Foo")])

def test_quantity_search(store: SqlStore) -> None:
    with store.transaction() as tx:
        low = tx.create({"resourceType": "Observation", "status": "final", "code": {"text": "muac"},
                         "valueQuantity": {"value": 11.2, "system": "http://unitsofmeasure.org", "code": "cm"}})
        high = tx.create({"resourceType": "Observation", "status": "final", "code": {"text": "muac"},
                          "valueQuantity": {"value": 13.0, "system": "http://unitsofmeasure.org", "code": "cm"}})
    assert find(store, "Observation", ("value-quantity", "lt11.5")) == {low.resource.id}
    assert find(store, "Observation", ("value-quantity", "13|http://unitsofmeasure.org|cm")) == {high.resource.id}



@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # search.html#number: 5.4 means [5.35, 5.45), 100 means [99.5, 100.5); the low end is
        # inside the range and the high end is not, also where binary floats round (5.4 - 0.05).
        ("5.4", {5.35, 5.4, 5.449}),
        ("eq5.4", {5.35, 5.4, 5.449}),
        ("ne5.4", {5.349, 5.45, 99.5, 100.5 - 0.001, 100.5, 0.3, 0.25}),
        ("100", {99.5, 100.5 - 0.001}),
        ("0.3", {0.25, 0.3}),
        ("0.25", {0.25}),
    ],
)
def test_quantity_implicit_range_keeps_its_exact_ends(store: SqlStore, value: str, expected: set[float]) -> None:
    values = [5.349, 5.35, 5.4, 5.449, 5.45, 99.5, 100.5 - 0.001, 100.5, 0.3, 0.25]
    ids: dict[str, float] = {}
    with store.transaction() as tx:
        for v in values:
            ids[tx.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                           "valueQuantity": {"value": v}}).resource.id] = v
    assert {ids[i] for i in find(store, "Observation", ("value-quantity", value))} == expected

@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([("birthdate", "notadate")], "birthdate"),
        ([("_count", "abc")], "_count"),
        ([("birthdate", "gt2024-13-01")], "birthdate"),
        ([("birthdate", "2020-02-30")], "not a valid date"),
        ([("birthdate", "2021-02-29")], "not a valid date"),
        ([("birthdate", "2020-04-00")], "not a valid date"),
        ([("family:sounds-like", "x")], "modifier"),
        ([("_sort", "nonsense")], "sort"),
        ([("_count", "-1")], "_count"),
        ([("birthdate:missing", "maybe")], "missing"),
        # _id and _lastUpdated are known parameters: a modifier on them is refused, not ignored as unknown.
        ([("_id:not", "x")], "modifier :not is not supported on _id"),
        ([("_id:missing", "false")], "modifier :missing is not supported on _id"),
        ([("_lastUpdated:missing", "false")], "modifier :missing is not supported on _lastUpdated"),
        ([("general-practitioner:Practitioner._id", "x")], "chaining to _id is not supported"),
        ([("organization._lastUpdated", "gt2020")], "chaining to _lastUpdated is not supported"),
        ([("_has:Observation:patient:_id", "o1")], "_has with _id is not supported"),
        ([("_has:Observation:patient:_lastUpdated", "ge2020")], "_has with _lastUpdated is not supported"),
    ],
)
def test_malformed_searches_are_rejected(items: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(SearchError, match=message):
        PARSER.parse("Patient", items)


def test_unknown_parameters_are_lenient_unless_strict() -> None:
    query = PARSER.parse("Patient", [("bogus", "1"), ("_totalMethod", "count")])
    assert query.used == [] and len(query.warnings) == 2
    with pytest.raises(SearchError):
        PARSER.parse("Patient", [("bogus", "1")], strict=True)
