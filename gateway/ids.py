"""Random ids (UUIDv4, hex) drawn from a per-thread block of ``os.urandom`` bytes.

``uuid.uuid4()`` and ``os.urandom(16)`` make a system call each, and each call lets go of
the interpreter lock: the event loop that asked for a request id then waits for whichever
thread took the lock (up to the 5 ms switch interval), and the store's writer paid a call a
resource. One call here serves 256 UUIDs, from the same cryptographic source. A forked child
starts with an empty block, so it never repeats its parent's ids.
"""

from __future__ import annotations

import os
import threading

__all__ = ["random_hex", "uuid4_text"]

_BLOCK = 4096
_local = threading.local()


def _reset_after_fork() -> None:
    global _local
    _local = threading.local()


os.register_at_fork(after_in_child=_reset_after_fork)


def _take(size: int) -> bytes:
    """``size`` fresh random bytes (at most ``_BLOCK``), never handed out twice."""
    local = _local
    block: bytes = getattr(local, "block", b"")
    at: int = getattr(local, "at", 0)
    if at + size > len(block):
        block = local.block = os.urandom(_BLOCK)
        at = 0
    local.at = at + size
    return block[at : at + size]


def random_hex(size: int = 16) -> str:
    """``size`` random bytes as lowercase hex."""
    return _take(size).hex()


def uuid4_text() -> str:
    """A random (version 4, RFC 9562) UUID in its canonical text form."""
    raw = bytearray(_take(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
