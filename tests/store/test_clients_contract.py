"""The API client registry contract (``ClientRegistry``): every backend (SQLite, PostgreSQL) must pass all of this."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.store import ApiClient, ClientRegistry


def test_clients_are_found_by_token_hash(store: ClientRegistry) -> None:
    client = ApiClient("emr", ("system/Patient.rs",), datetime.now(UTC))
    store.save_client(client, "hash-1")
    found = store.client_by_token_hash("hash-1")
    assert found is not None and found.scopes == ("system/Patient.rs",)
    store.save_client(client, "hash-2")  # re-keying replaces the old token
    assert store.client_by_token_hash("hash-1") is None
    assert [c.name for c in store.list_clients()] == ["emr"]
