"""Every Redis key the delivery queue uses, in one place.

All keys of one destination share the hash tag ``{name}``, so a destination's keys live
in one cluster slot and each Lua script touches one slot. Scripts receive a
destination's base (``gw:dq:{shr}:``) and append the suffixes below.
"""

from __future__ import annotations

DEFAULT_PREFIX = "gw:dq"
GROUP = "workers"  # the one consumer group on each destination's ready stream

# Suffixes after a destination's base, with what each holds.
JOB = "job:"  # small hash per job: state, attempts, claim token, key, ref, seq, queued-at, stream entry id, lane
BODY = "body:"  # string per job: the immutable job JSON, a newline, the payload (kept apart so the
#                 state hash stays small enough for Redis' compact listpack encoding)
READY = "ready"  # stream of claimable head jobs (field "j" = job id), consumed by GROUP
READY_BACKFILL = "ready:backfill"  # the same for jobs of backfilled changes, read after READY is empty
DELAYED = "delayed"  # sorted set: retrying job id -> due time (epoch ms)
INFLIGHT = "inflight"  # sorted set: claimed job id -> lease deadline (epoch ms)
PENDING = "pending"  # sorted set: every live job id -> queued time (epoch s), for depth and oldest age
DEAD = "dead"  # sorted set: dead job id -> time of death (epoch s)
DEAD_GROUP = "dgrp:"  # set per dead-letter group: the dead job ids refused for one destination object
DIGESTS = "digests"  # hash: destination object name -> digest of it as the destination last accepted it
KEY = "key:"  # list per ordering key: live job ids in delivery order; the head is the only claimable one
LATEST = "latest"  # hash: resource ref -> newest queued change seq (coalescing)
CURSOR = "cursor"  # string: the outbox's change-feed position
PAUSED = "paused"  # string, present while the destination is paused
CIRCUIT = "circuit"  # hash: last published circuit state and until
DELIVERED = "delivered:"  # counter per 10-second bucket (expires), for delivered/min


def destination_base(prefix: str, destination: str) -> str:
    """The key base of one destination, e.g. ``gw:dq:{shr}:``."""
    return f"{prefix}:{{{destination}}}:"


def destinations_key(prefix: str) -> str:
    """The set of destination names the queue has seen."""
    return f"{prefix}:destinations"


def workers_key(prefix: str) -> str:
    """The hash of worker heartbeats: worker name -> its last heartbeat (JSON)."""
    return f"{prefix}:workers"
