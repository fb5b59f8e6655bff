"""The API client registry contract (``ClientRegistry``): every backend (SQLite, PostgreSQL) must pass all of this."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.store import ApiClient, ClientRegistry


def test_clients_are_found_by_token_hash(store: ClientRegistry) -> None:
    client = ApiClient("emr", ("system/Patient.rs",), datetime.now(UTC))
    store.save_client(client, "hash-1")
    found = store.client_by_token_hash("hash-1")
    assert found is not None and found.scopes == ("system/Patient.rs",)
    store.save_client(client, "hash-2")  # re-keying replaces the old token
    assert store.client_by_token_hash("hash-1") is None
    assert [c.name for c in store.list_clients()] == ["emr"]


def test_lifecycle_fields_round_trip(store: ClientRegistry) -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    expires = created + timedelta(days=90)
    store.save_client(ApiClient("emr", ("admin",), created, expires=expires), "hash-1")
    found = store.client_by_token_hash("hash-1")
    assert found is not None
    assert (found.expires, found.revoked, found.last_used, found.disabled) == (expires, None, None, False)
    assert found.active(created) and not found.active(expires)


def test_revoke_keeps_the_first_time_and_reports_unknown_clients(store: ClientRegistry) -> None:
    store.save_client(ApiClient("emr", ("admin",), datetime.now(UTC)), "hash-1")
    assert store.revoke_client("emr") is True
    revoked = store.client_by_token_hash("hash-1")
    assert revoked is not None and revoked.revoked is not None and not revoked.active(datetime.now(UTC))
    assert store.revoke_client("emr") is True
    again = store.client_by_token_hash("hash-1")
    assert again is not None and again.revoked == revoked.revoked
    assert store.revoke_client("nobody") is False


def test_rekey_keeps_the_other_fields_and_not_revoked_clients(store: ClientRegistry) -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    store.save_client(ApiClient("emr", ("system/Patient.rs",), datetime.now(UTC), expires=expires), "hash-1")
    assert store.rekey_client("emr", "hash-2") is True
    assert store.client_by_token_hash("hash-1") is None
    found = store.client_by_token_hash("hash-2")
    assert found is not None and found.scopes == ("system/Patient.rs",) and found.expires == expires
    assert store.rekey_client("nobody", "hash-3") is False
    store.revoke_client("emr")
    assert store.rekey_client("emr", "hash-3") is False
    assert store.client_by_token_hash("hash-3") is None


def test_touch_records_last_use(store: ClientRegistry) -> None:
    store.save_client(ApiClient("emr", ("admin",), datetime.now(UTC)), "hash-1")
    when = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    store.touch_client("emr", when)
    assert [c.last_used for c in store.list_clients()] == [when]


def test_policy_and_keys_round_trip_and_can_be_replaced(store: ClientRegistry) -> None:
    policy = {"organizations": ["Organization/district-a"], "districts": ["Gasabo"]}
    jwks = {"keys": [{"kty": "EC", "crv": "P-384", "x": "x", "y": "y", "kid": "k1"}]}
    store.save_client(ApiClient("emr", ("system/Patient.rs",), datetime.now(UTC), policy=policy), "hash-1")
    found = store.client_by_name("emr")
    assert found is not None and found.policy == policy and found.jwks is None
    assert store.set_client_keys("emr", jwks) is True
    assert store.set_client_policy("emr", None) is True
    again = store.client_by_token_hash("hash-1")
    assert again is not None and again.policy is None and again.jwks == jwks
    assert store.client_by_name("nobody") is None
    assert store.set_client_policy("nobody", policy) is False
    assert store.set_client_keys("nobody", jwks) is False
