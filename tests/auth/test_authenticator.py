"""Bearer tokens: revocation, re-keying and expiry reach every process within 1 s; last use is recorded, throttled.

Two ``Authenticator`` objects over one store stand for two gateway processes; a manual clock
replaces sleeping.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.auth import Authenticator, hash_token, new_token
from gateway.errors import FhirError
from gateway.store import ApiClient, ClientRegistry


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def register(store: ClientRegistry, clock: Clock, expires_in: float | None = None) -> str:
    token = new_token()
    expires = None if expires_in is None else datetime.fromtimestamp(clock.now + expires_in, UTC)
    store.save_client(ApiClient("emr", ("system/Patient.rs",), datetime.fromtimestamp(clock.now, UTC),
                                expires=expires), hash_token(token))
    return token


def refused(auth: Authenticator, token: str) -> bool:
    try:
        auth.principal(f"Bearer {token}")
    except FhirError as exc:
        assert exc.status == 401
        return True
    return False


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_auth(store: object, **kwargs: Any) -> Authenticator:
    """An authenticator over ``store`` (or a stand-in for one)."""
    return Authenticator(store, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def processes(store: ClientRegistry, clock: Clock) -> tuple[Authenticator, Authenticator]:
    return make_auth(store, now=clock), make_auth(store, now=clock)


def test_a_revoked_token_is_refused_everywhere_within_a_second(
    store: ClientRegistry, clock: Clock, processes: tuple[Authenticator, Authenticator],
) -> None:
    token = register(store, clock)
    assert all(auth.principal(f"Bearer {token}").name == "emr" for auth in processes)  # both cache it
    assert store.revoke_client("emr")
    clock.now += 1.0
    assert all(refused(auth, token) for auth in processes)


def test_a_rotated_token_is_refused_everywhere_within_a_second(
    store: ClientRegistry, clock: Clock, processes: tuple[Authenticator, Authenticator],
) -> None:
    old = register(store, clock)
    assert all(auth.principal(f"Bearer {old}").name == "emr" for auth in processes)
    new = new_token()
    assert store.rekey_client("emr", hash_token(new))
    clock.now += 1.0
    assert all(refused(auth, old) for auth in processes)
    assert all(auth.principal(f"Bearer {new}").name == "emr" for auth in processes)


def test_an_expired_token_is_refused_at_its_expiry_even_from_the_cache(
    store: ClientRegistry, clock: Clock, processes: tuple[Authenticator, Authenticator],
) -> None:
    token = register(store, clock, expires_in=0.5)
    assert all(auth.principal(f"Bearer {token}").name == "emr" for auth in processes)
    clock.now += 0.5
    assert all(refused(auth, token) for auth in processes)


def test_a_cached_lookup_spares_the_store_within_the_second(store: ClientRegistry, clock: Clock) -> None:
    calls = 0

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        def client_by_token_hash(self, token_hash: str) -> ApiClient | None:
            nonlocal calls
            calls += 1
            return store.client_by_token_hash(token_hash)

    auth = make_auth(Counting(), now=clock)
    token = register(store, clock)
    for _ in range(100):
        auth.principal(f"Bearer {token}")
        clock.now += 0.009
    assert calls == 1
    clock.now += 0.2
    auth.principal(f"Bearer {token}")
    assert calls == 2


def test_last_use_is_recorded_at_most_once_a_minute_per_process(
    store: ClientRegistry, clock: Clock, processes: tuple[Authenticator, Authenticator],
) -> None:
    token = register(store, clock)
    auth = processes[0]
    auth.principal(f"Bearer {token}")
    assert [c.last_used for c in store.list_clients()] == [None]  # the request path only notes it
    auth.flush()
    first = datetime.fromtimestamp(clock.now, UTC)
    assert [c.last_used for c in store.list_clients()] == [first]
    clock.now += 30
    auth.principal(f"Bearer {token}")
    auth.flush()
    assert [c.last_used for c in store.list_clients()] == [first]
    clock.now += 30
    auth.principal(f"Bearer {token}")
    auth.flush()
    assert [c.last_used for c in store.list_clients()] == [first + timedelta(seconds=60)]


def test_unknown_and_disabled_tokens_are_refused(store: ClientRegistry, clock: Clock) -> None:
    auth = make_auth(store, now=clock)
    assert refused(auth, new_token())
    token = new_token()
    store.save_client(ApiClient("off", ("admin",), datetime.now(UTC), disabled=True), hash_token(token))
    assert refused(auth, token)


def test_a_failed_last_use_write_does_not_refuse_the_request(
    store: ClientRegistry, clock: Clock, caplog: pytest.LogCaptureFixture,
) -> None:
    token = register(store, clock)

    class Busy:
        """The store, except that recording last use fails as a locked database does."""

        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        def touch_client(self, name: str, when: datetime) -> None:
            raise sqlite3.OperationalError("database is locked")

    auth = make_auth(Busy(), now=clock)
    assert auth.principal(f"Bearer {token}").name == "emr"
    auth.flush()
    assert "could not record last use of a client (OperationalError)" in caplog.text
    assert [c.last_used for c in store.list_clients()] == [None]


def test_no_client_may_go_by_the_admin_tokens_name(store: ClientRegistry, clock: Clock) -> None:
    """The configured admin token's principal is ``admin-token``, with no client row. A client of that
    name would own its export jobs and subscriptions (whose notifications skip every data policy for
    the admin token) and be it in the audit trail: the name is reserved, and a row registered before
    is refused rather than taken for the admin token."""
    from gateway.auth import ClientNameError, create_client
    from gateway.search import default_registry
    from gateway.store import SubscriptionRecord
    from gateway.subscriptions.access import owner_access

    with pytest.raises(ClientNameError, match="admin token"):
        create_client(store, "admin-token", ["system/Patient.rs"])
    assert store.client_by_name("admin-token") is None
    token = new_token()  # as a store written before the name was reserved holds it
    store.save_client(ApiClient("admin-token", ("system/Subscription.cruds", "system/Patient.rs"),
                                datetime.fromtimestamp(clock.now, UTC), policy={"patients": ["Patient/p1"]}),
                      hash_token(token))
    auth = Authenticator(store, admin_token="the-configured-admin-token-0123456789", now=clock)
    assert refused(auth, token)
    assert auth.principal("Bearer the-configured-admin-token-0123456789").name == "admin-token"
    # A subscription that client made before: it hears nothing (no longer the admin's, unlimited).
    now = datetime.now(UTC)
    record = SubscriptionRecord(sid="s1", owner="admin-token", scopes=("system/Patient.rs",), content={},
                                status="active", start_seq=0, created=now, updated=now)
    assert owner_access(store, record, {}, default_registry(), now) is None
