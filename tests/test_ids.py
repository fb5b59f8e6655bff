"""``gateway.ids``: random UUIDs and hex ids from blocks of ``os.urandom``, unique across threads and forks."""

from __future__ import annotations

import os
import threading
import uuid

from gateway.ids import random_hex, uuid4_text


def test_uuids_are_version_4_rfc_variant_and_never_repeat() -> None:
    made = [uuid4_text() for _ in range(20_000)]  # many blocks
    assert len(set(made)) == len(made)
    for text in made[:2_000]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert len({random_hex(16) for _ in range(5_000)}) == 5_000
    assert len(random_hex(8)) == 16


def test_threads_draw_from_blocks_of_their_own() -> None:
    found: list[list[str]] = [[] for _ in range(8)]

    def draw(n: int) -> None:
        found[n] = [uuid4_text() for _ in range(3_000)]

    threads = [threading.Thread(target=draw, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [text for part in found for text in part]
    assert len(set(everything)) == 8 * 3_000


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    uuid4_text()  # the parent holds a block with ids still to hand out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, "\n".join(uuid4_text() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    parent = {uuid4_text() for _ in range(50)}
    assert len(child) == 50 and not child & parent
