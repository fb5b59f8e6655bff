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


def test_access_tokens_are_found_with_their_client_as_it_is_now(store: ClientRegistry) -> None:
    store.save_client(ApiClient("emr", ("system/*.cruds",), datetime.now(UTC)), "hash-1")
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    store.save_access_token("at-1", "emr", ("system/Patient.rs", "admin"), expires)
    found = store.access_token_by_hash("at-1")
    assert found is not None
    assert (found.client.name, found.scopes, found.expires) == ("emr", ("system/Patient.rs", "admin"), expires)
    assert found.client.active(datetime.now(UTC))
    assert store.access_token_by_hash("at-2") is None
    assert store.revoke_client("emr")
    assert store.access_token_by_hash("at-1") is None  # revoking a client ends its access tokens


def test_an_access_token_of_a_client_that_is_gone_is_not_found(store: ClientRegistry) -> None:
    store.save_access_token("at-1", "nobody", ("system/Patient.rs",), datetime.now(UTC) + timedelta(minutes=5))
    assert store.access_token_by_hash("at-1") is None


def test_expired_access_tokens_are_purged_when_a_token_is_issued(store: ClientRegistry) -> None:
    store.save_client(ApiClient("emr", ("system/*.cruds",), datetime.now(UTC)), "hash-1")
    store.save_access_token("old", "emr", ("system/Patient.rs",), datetime(2020, 1, 1, tzinfo=UTC))
    assert store.access_token_by_hash("old") is not None  # found, with an expiry the caller refuses
    store.save_access_token("new", "emr", ("system/Patient.rs",), datetime.now(UTC) + timedelta(minutes=5))
    assert store.access_token_by_hash("old") is None
    assert store.access_token_by_hash("new") is not None


def test_an_assertion_id_is_remembered_once_per_client_until_it_expires(store: ClientRegistry) -> None:
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert store.remember_jti("emr", "jti-1", later) is True
    assert store.remember_jti("emr", "jti-1", later) is False
    assert store.remember_jti("lab", "jti-1", later) is True  # ids are per client (per issuer)
    assert store.remember_jti("emr", "jti-2", later) is True
    past = datetime(2020, 1, 1, tzinfo=UTC)
    assert store.remember_jti("emr", "jti-old", past) is True
    # The expired row is purged first, so the id is new again (the expired assertion it came
    # from is refused before its id is looked at).
    assert store.remember_jti("emr", "jti-old", past) is True
    assert store.remember_jti("emr", "jti-1", later) is False
