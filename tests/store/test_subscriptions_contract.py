"""The SubscriptionStore contract on both backends: records, statuses, failure counting and event
numbers that are given out once per (subscription, change) and in change order."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.store import Store, SubscriptionRecord


def _record(sid: str, owner: str = "emr", start: int = 0) -> SubscriptionRecord:
    now = datetime.now(UTC)
    return SubscriptionRecord(sid, owner, ("system/Patient.rs",), {"resourceType": "Subscription", "criteria": "t"},
                              "requested", start, now, now)


def test_event_numbers_are_given_once_in_change_order(store: Store) -> None:
    now = datetime.now(UTC)
    store.subscription_save(_record("a"))
    store.subscription_save(_record("b"))
    first = store.subscription_event_numbers([("a", 9), ("a", 4), ("b", 9)], now)
    assert first == {("a", 4): 1, ("a", 9): 2, ("b", 9): 1}
    # A batch read again after a crash keeps its numbers; new changes continue the count.
    again = store.subscription_event_numbers([("a", 9), ("a", 12), ("a", 4)], now)
    assert again == {("a", 9): 2, ("a", 12): 3, ("a", 4): 1}
    assert store.subscription_get("a").events == 3  # type: ignore[union-attr]
    assert store.subscription_get("b").events == 1  # type: ignore[union-attr]


def test_failures_move_to_error_at_the_threshold_and_a_status_change_resets(store: Store) -> None:
    now = datetime.now(UTC)
    store.subscription_save(_record("a"))
    assert store.subscription_note_failure("a", "http_500", 2, now) == "requested"
    assert store.subscription_note_failure("a", "http_500", 2, now) == "error"
    record = store.subscription_get("a")
    assert record is not None and record.failures == 2 and record.error == "http_500"
    assert store.subscription_set_status("a", "active", failures=0, when=now, only_from=("error",))
    assert not store.subscription_set_status("a", "active", when=now, only_from=("off",))
    record = store.subscription_get("a")
    assert record is not None and (record.status, record.failures, record.error) == ("active", 0, None)
    assert store.subscription_note_failure("missing", "x", 1, now) is None


def test_listing_by_owner_and_liveness_and_deleting(store: Store) -> None:
    now = datetime.now(UTC)
    store.subscription_save(_record("a", owner="one"))
    store.subscription_save(_record("b", owner="two"))
    store.subscription_set_status("b", "off", when=now)
    assert [r.sid for r in store.subscription_list(owner="one")] == ["a"]
    assert [r.sid for r in store.subscription_list(live=True)] == ["a"]
    store.subscription_event_numbers([("a", 1)], now)
    assert store.subscription_delete("a") and not store.subscription_delete("a")
    store.subscription_save(_record("a", owner="one"))
    assert store.subscription_get("a").events == 0  # type: ignore[union-attr]  # numbers went with it
