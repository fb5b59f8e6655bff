"""The garbage-collector settings a gateway process runs with."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.heap import OLDER_THRESHOLDS, YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_settle_heap_freezes_start_up_objects_and_spaces_out_collections() -> None:
    start_up = [[i] for i in range(1000)]  # containers the collector tracks
    settle_heap()
    assert gc.get_freeze_count() >= len(start_up)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


@pytest.mark.usefixtures("restore_gc")
def test_cycles_are_still_collected_after_settling() -> None:
    settle_heap()

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    first, second = Node(), Node()
    first.other, second.other = second, first
    del first, second
    assert gc.isenabled()
    assert gc.collect() >= 2  # the two nodes (and their __dict__s) of the unreachable cycle
