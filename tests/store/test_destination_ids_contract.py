"""The destination id contract (``DestinationIds``): every backend (SQLite, PostgreSQL) must pass all of this."""

from __future__ import annotations

from gateway.store import DestinationIds


def test_an_unsent_resource_has_no_row(store: DestinationIds) -> None:
    assert store.destination_ids("openmrs", ["Patient/p1"]) == {}


def test_a_pending_create_then_its_confirmed_id(store: DestinationIds) -> None:
    store.set_destination_id("openmrs", "Patient/p1", None)
    assert store.destination_ids("openmrs", ["Patient/p1"]) == {"Patient/p1": None}
    store.set_destination_id("openmrs", "Patient/p1", "0f3c-uuid")
    assert store.destination_ids("openmrs", ["Patient/p1", "Encounter/e1"]) == {"Patient/p1": "0f3c-uuid"}


def test_ids_are_per_destination_and_per_type(store: DestinationIds) -> None:
    store.set_destination_id("openmrs", "Patient/x", "a")
    store.set_destination_id("openmrs", "Encounter/x", "b")
    store.set_destination_id("other", "Patient/x", "c")
    assert store.destination_ids("openmrs", ["Patient/x", "Encounter/x"]) == {"Patient/x": "a", "Encounter/x": "b"}
    assert store.destination_ids("other", ["Patient/x", "Encounter/x"]) == {"Patient/x": "c"}


def test_many_refs_are_read_in_one_call(store: DestinationIds) -> None:
    refs = [f"Observation/o{n}" for n in range(450)]
    for n, ref in enumerate(refs):
        store.set_destination_id("openmrs", ref, f"r{n}")
    found = store.destination_ids("openmrs", refs)
    assert len(found) == 450 and found["Observation/o449"] == "r449"


def test_forgetting_an_id(store: DestinationIds) -> None:
    store.set_destination_id("openmrs", "Patient/p1", "a")
    store.forget_destination_id("openmrs", "Patient/p1")
    store.forget_destination_id("openmrs", "Patient/p1")  # twice is harmless
    assert store.destination_ids("openmrs", ["Patient/p1"]) == {}
