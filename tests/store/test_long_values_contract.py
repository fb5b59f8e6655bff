"""Long searchable values (a clinical note in a string parameter, a pasted blob in an identifier):
stored and found on every backend.

PostgreSQL refuses a B-tree index entry above ~2.7 KB ("index row size exceeds btree maximum",
ProgramLimitExceeded), and the index rows of tokens and strings were written as the resource
said: any client, or a CHW record through ingest, could make a write fail on PostgreSQL only,
answered 503 "retry later" (a retry fails the same way, and a pushing source retries for ever).
"""

from __future__ import annotations

import random
import string

from gateway.store import ResourceStore
from tests.store.helpers import search_ids

#: Far past the B-tree limit, and incompressible (PostgreSQL compresses index entries).
LONG = 9000


def _noise(seed: int, length: int = LONG) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(length))


def test_long_string_and_token_values_are_stored_and_found(store: ResourceStore) -> None:
    family = _noise(1)
    value = _noise(2)
    system = "urn:" + _noise(3)
    code = _noise(4)
    accents = "é" * 3000 + "z"  # multi-byte characters: 6 KB of UTF-8
    with store.transaction() as tx:
        pid = tx.create({"resourceType": "Patient", "name": [{"family": family}],
                         "identifier": [{"system": system, "value": value}],
                         "address": [{"district": accents}]}).resource.id
        oid = tx.create({"resourceType": "Observation", "status": "final",
                         "code": {"coding": [{"system": "http://loinc.org", "code": code}]}}).resource.id

    assert search_ids(store, "Patient", ("family", family[:10])) == [pid]
    assert search_ids(store, "Patient", ("family", family)) == [pid]
    assert search_ids(store, "Patient", ("family:exact", family)) == [pid]
    assert search_ids(store, "Patient", ("family:contains", family[100:120])) == [pid]
    assert search_ids(store, "Patient", ("address-district", "e" * 200)) == [pid]
    assert search_ids(store, "Patient", ("identifier", f"{system}|{value}")) == [pid]
    assert search_ids(store, "Patient", ("identifier", value)) == [pid]
    assert search_ids(store, "Observation", ("code", f"http://loinc.org|{code}")) == [oid]
    assert search_ids(store, "Observation", ("code", code)) == [oid]


def test_long_tokens_match_exactly_not_by_their_start(store: ResourceStore) -> None:
    """Two long identifiers that differ only at their end are two identifiers."""
    start = _noise(5)
    with store.transaction() as tx:
        first = tx.create({"resourceType": "Patient", "identifier": [{"system": "urn:s", "value": start + "A"}]})
        second = tx.create({"resourceType": "Patient", "identifier": [{"system": "urn:s", "value": start + "B"}]})
    assert search_ids(store, "Patient", ("identifier", f"urn:s|{start}A")) == [first.resource.id]
    assert search_ids(store, "Patient", ("identifier", f"urn:s|{start}B")) == [second.resource.id]
    assert search_ids(store, "Patient", ("identifier", f"urn:s|{start}C")) == []
    assert search_ids(store, "Patient", ("identifier", f"urn:s|{start}")) == []


def test_long_references_are_stored_and_found(store: ResourceStore) -> None:
    """A reference's target id and type are indexed too (``Patient/<9 KB>``, ``<9 KB of letters>/x``)."""
    target = "Patient/" + _noise(6)
    odd = "Z" + "".join(c for c in _noise(7) if c.isalpha()) + "/x"
    with store.transaction() as tx:
        first = tx.create({"resourceType": "Observation", "status": "final", "code": {"text": "t"},
                           "subject": {"reference": target}}).resource.id
        second = tx.create({"resourceType": "Observation", "status": "final", "code": {"text": "t"},
                            "subject": {"reference": odd}}).resource.id
    assert search_ids(store, "Observation", ("subject", target)) == [first]
    assert search_ids(store, "Observation", ("subject", odd)) == [second]
    assert search_ids(store, "Observation", ("subject", target[:-1])) == []
