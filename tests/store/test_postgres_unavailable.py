"""A PostgreSQL store whose server restarts (or drops its connections): the requests that meet a
dead connection get a 503 ``transient`` with ``Retry-After`` (not a 500 like a bug), the store's
connections recover by themselves, and a server restart costs one failed read, not one per
pooled connection."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from gateway.api.app import create_app
from gateway.settings import Settings
from gateway.store import StoreUnavailable, open_store
from gateway.store.postgres import _IDLE_CHECK, PostgresStore
from tests.conftest import PG_URL, make_token
from tests.support.cuttable_link import linked_schema_url
from tests.support.gateway_app import MACHINE_SPEED_LIMITS


def _drop_connections(store: PostgresStore, readers: int) -> None:
    """Fill the read pool with ``readers`` connections, then end every backend of the store, as
    a server restart does (the gateway's connections do not know until they are used)."""
    with ExitStack() as stack:
        pids = [stack.enter_context(store._pool.connection()).info.backend_pid for _ in range(readers)]
    writer = store._writer._conn
    if writer is not None:
        pids.append(writer.info.backend_pid)
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.fixture
def store(pg_store: PostgresStore) -> PostgresStore:
    return pg_store


def _patient(rid: str) -> dict[str, object]:
    return {"resourceType": "Patient", "id": rid, "name": [{"family": "Achieng"}]}


def _put(store: PostgresStore, rid: str) -> None:
    with store.transaction() as tx:
        tx.update(_patient(rid))


def test_dead_connections_fail_one_read_as_unavailable_then_recover(store: PostgresStore) -> None:
    _put(store, "p1")
    _drop_connections(store, readers=4)
    with pytest.raises(StoreUnavailable) as failed:
        store.read("Patient", "p1")
    assert isinstance(failed.value.__cause__, psycopg.OperationalError)
    for _ in range(6):  # the other dead connections were dropped with the first
        assert store.read("Patient", "p1") is not None


def test_after_a_restart_the_first_read_gets_a_live_connection(store: PostgresStore) -> None:
    # A restart takes seconds: connections idle that long are tried before a read gets them, so
    # the first read of each process after a restart no longer fails (it answered 503).
    _put(store, "p1")
    _drop_connections(store, readers=4)
    time.sleep(_IDLE_CHECK + 0.2)
    assert [store.read("Patient", "p1") is not None for _ in range(6)] == [True] * 6


@pytest.fixture
async def pg_api(pg_schema_url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, PostgresStore]]:
    settings = Settings(store_url=pg_schema_url, allowed_hosts=["gateway.test"], rate_limit=MACHINE_SPEED_LIMITS,
                        bulk_export={"directory": str(tmp_path / "exports")})
    store = open_store(settings.store_url)
    assert isinstance(store, PostgresStore)
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        token = make_token(store, ("system/*.cruds",), name=f"c-{uuid.uuid4().hex[:8]}")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test",
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            yield client, store
    store.close()


async def test_the_api_answers_503_transient_while_the_store_is_unreachable(
    pg_api: tuple[httpx.AsyncClient, PostgresStore],
) -> None:
    client, store = pg_api
    assert (await client.put("/fhir/Patient/p1", json=_patient("p1"))).status_code == 201
    _drop_connections(store, readers=3)

    read = await client.get("/fhir/Patient/p1")
    assert read.status_code == 503
    assert read.headers["Retry-After"] == "5"
    issue = read.json()["issue"][0]
    assert issue["code"] == "transient" and "store is unavailable" in issue["diagnostics"]
    assert [(await client.get("/fhir/Patient/p1")).status_code for _ in range(4)] == [200] * 4

    # The writer's dead connection is replaced before its transaction begins: nothing had run in
    # it, so the write goes through instead of answering 503 once per process after a restart.
    assert (await client.put("/fhir/Patient/p2", json=_patient("p2"))).status_code == 201
    assert (await client.get("/fhir/Patient/p2")).status_code == 200


def test_a_write_after_the_server_dropped_the_writer_connection_goes_through(store: PostgresStore) -> None:
    _put(store, "p1")
    _drop_connections(store, readers=0)  # the writer's connection (reads are the test above's)
    _put(store, "p2")  # no StoreUnavailable: BEGIN met the dead connection, a new one took over
    assert store.read("Patient", "p2") is not None
    # A server that is really gone still fails the write as unavailable (no retry loop).
    with pytest.raises(StoreUnavailable):
        broken = PostgresStore("postgresql://postgres@127.0.0.1:1/test")
        try:
            _put(broken, "p3")
        finally:
            broken.close()


def test_a_readiness_check_answers_within_seconds_when_the_server_is_gone() -> None:
    """/readyz pings the store: with the server unreachable it must answer 503 before a probe's
    own timeout, not after the read pool's 30 s wait."""
    import time

    unreachable = PostgresStore("postgresql://postgres@127.0.0.1:1/test")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            unreachable.ping()
        assert time.monotonic() - started < 10
    finally:
        unreachable.close()


def test_pool_timeout_in_the_url_bounds_how_long_a_read_waits_for_the_server() -> None:
    with linked_schema_url() as (url, _, link):
        store = open_store(f"{url}&pool_timeout=1.5")
        try:
            store.read("Patient", "warm")  # a pooled connection exists, then the link goes
            link.cut()
            with pytest.raises(StoreUnavailable):  # meets the dead connection: fails at once
                store.read("Patient", "p1")
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):  # waits for a new connection, as long as the URL says
                store.read("Patient", "p1")
            waited = time.monotonic() - started
            assert 1.4 < waited < 10, f"the read waited {waited:.1f} s, not pool_timeout's 1.5 s"
        finally:
            link.mend()
            store.close()


@pytest.mark.parametrize("bad", ["0", "-1", "soon", "7200"])
def test_a_bad_pool_timeout_is_refused_naming_it(pg_schema_url: str, bad: str) -> None:
    with pytest.raises(ValueError, match="pool_timeout"):
        open_store(f"{pg_schema_url}&pool_timeout={bad}")


def test_a_readiness_check_answers_within_seconds_when_the_server_stops_answering() -> None:
    """A frozen server (or a network path that stops carrying bytes without a reset) leaves the
    pooled connection open: taking it is instant, and the ``SELECT 1`` on it waited as long as the
    stall did (minutes, for ever), so /readyz never answered. The whole check has the few seconds."""
    with linked_schema_url() as (url, _, link):
        store = open_store(url)
        try:
            store.ping()  # a pooled connection exists, then the server stops answering
            link.stall()
            outcome: list[BaseException | None] = []

            def ping() -> None:
                try:
                    store.ping()
                    outcome.append(None)
                except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
                    outcome.append(exc)

            started = time.monotonic()
            thread = threading.Thread(target=ping, daemon=True)
            thread.start()
            thread.join(timeout=15)
            waited = time.monotonic() - started
            assert not thread.is_alive(), "the ping still waits on the stalled server after 15 s"
            assert isinstance(outcome[0], StoreUnavailable), outcome
            assert waited < 10, f"the ping took {waited:.1f} s"
            link.mend()
            store.ping()  # the stalled connection was dropped: a new one answers
            assert store.read("Patient", "p1") is None
        finally:
            link.mend()
            store.close()



def _turn_writer_read_only(store: PostgresStore) -> None:
    """The writer's server session turns read-only, as for a connection that stayed with a server
    set ``default_transaction_read_only`` (a move to another server) or turned standby: the
    connection is open and answers, but takes no writes."""
    writer = store._writer._conn
    assert writer is not None
    writer.execute("SET default_transaction_read_only = on")


def test_a_writer_connection_that_turned_read_only_is_replaced(store: PostgresStore) -> None:
    _put(store, "p1")
    _turn_writer_read_only(store)
    # Kept, it failed every write until a restart; the next write opens a new connection (to
    # the new primary), as after a dropped one.
    _put(store, "p2")
    assert store.read("Patient", "p2") is not None


@contextmanager
def _writes_refused(store: PostgresStore) -> Iterator[None]:
    """The server refuses writes as a read-only one does (SQLSTATE 25006), before the client
    knows: a trigger on the store's resources table."""
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"""CREATE FUNCTION "{store.schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'cannot execute INSERT in a read-only transaction'
            USING ERRCODE = 'read_only_sql_transaction'; END $$""")
        admin.execute(f'CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON "{store.schema}".resources'
                      f' FOR EACH ROW EXECUTE FUNCTION "{store.schema}".refuse()')
        try:
            yield
        finally:
            admin.execute(f'DROP TRIGGER refuse ON "{store.schema}".resources')


def test_a_write_the_server_refuses_as_read_only_is_unavailable(store: PostgresStore) -> None:
    _put(store, "p1")
    with _writes_refused(store), pytest.raises(StoreUnavailable):  # a 503 to retry, not a 500 like a bug
        _put(store, "p2")
    _put(store, "p2")
    assert store.read("Patient", "p2") is not None


async def test_the_api_answers_503_while_the_store_takes_no_writes(
    pg_api: tuple[httpx.AsyncClient, PostgresStore],
) -> None:
    client, store = pg_api
    assert (await client.put("/fhir/Patient/p1", json=_patient("p1"))).status_code == 201
    with _writes_refused(store):
        refused = await client.put("/fhir/Patient/p2", json=_patient("p2"))
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert refused.json()["issue"][0]["code"] == "transient"
    assert (await client.put("/fhir/Patient/p2", json=_patient("p2"))).status_code == 201


def test_a_commit_the_server_carried_out_is_a_success_though_its_answer_was_lost() -> None:
    """The link fails after the server got COMMIT and before its answer came back: the write is
    stored. Answering it 503 "not applied" (as for a write that never reached the server) made a
    client retry what was done: a second Patient for a POST, a second event downstream. The writer
    asks the server (a new connection) what became of its transaction."""
    with linked_schema_url() as (url, direct, link):
        store = open_store(url)
        assert isinstance(store, PostgresStore)
        try:
            _put(store, "p0")
            link.cut_after(b"COMMIT")
            outcome: list[BaseException | None] = []

            def put() -> None:
                try:
                    _put(store, "p1")
                    outcome.append(None)
                except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
                    outcome.append(exc)

            thread = threading.Thread(target=put, daemon=True)
            thread.start()
            time.sleep(1.0)  # the link is cut 0.3 s after the COMMIT went through
            link.mend()  # the server is reachable again for the question
            thread.join(timeout=15)
            assert not thread.is_alive()
            witness = open_store(direct)
            try:
                assert witness.read("Patient", "p1") is not None  # the server did commit it
            finally:
                witness.close()
            assert outcome == [None], outcome
        finally:
            link.mend()
            store.close()


def _ping_refusal(store: PostgresStore) -> str | None:
    """What the readiness check says after the store's sessions were ended: past the pool's idle
    check a dead connection is replaced before a check gets it (one used within its last second
    may still fail a check; the next one speaks to the server as it is now)."""
    time.sleep(_IDLE_CHECK * 1.5)
    for _ in range(5):
        try:
            store.ping()
            return None
        except StoreUnavailable as exc:
            if "takes no writes" in str(exc):
                return str(exc)
    raise AssertionError("the readiness check kept failing for another reason")


def _end_sessions(role: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))


def test_a_readiness_check_fails_while_the_server_takes_no_writes(pg_schema_url: str) -> None:
    """A server that answers but takes no writes (a standby after a failover, or
    ``default_transaction_read_only`` during a move) is not ready: every write and ingest would be
    a 503, so a load balancer must send the traffic elsewhere. The store's role gets read-only
    sessions, as every session of a standby is, and its sessions are ended (the failover)."""
    role = f"ro_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN SUPERUSER')
    store = open_store(pg_schema_url.replace("postgresql://postgres@", f"postgresql://{role}@"))
    assert isinstance(store, PostgresStore)
    try:
        store.ping()
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
        _end_sessions(role)
        assert _ping_refusal(store) is not None
        assert store.read("Patient", "nobody") is None  # reads still go through
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'ALTER ROLE "{role}" RESET default_transaction_read_only')
        _end_sessions(role)
        assert _ping_refusal(store) is None  # writable again: ready again
    finally:
        store.close()
        _end_sessions(role)
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER')
            admin.execute(f'DROP ROLE "{role}"')
