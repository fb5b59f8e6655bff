"""Deterministic resource ids.

Every resource id is ``uuid5(NAMESPACE, "<system>|<ResourceType>|<key>")``:

* for a shared entity (a person, a CHW, a household) the key is the entity's id in the
  source system, so a visit report and the later registration of the same person agree on
  ``Patient/<id>`` whatever order they arrive in;
* for everything else the key is ``<record id>/<rule name>[/<repeat key>]``, so resubmitting
  the same (or an edited) record updates the same resources instead of adding new ones.

``system`` is the mapping set's source-system URI; two sources that could share record ids
must use different systems.
"""

from __future__ import annotations

import hashlib
import uuid

__all__ = ["NAMESPACE", "entity_id", "record_key"]

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:chw-gateway:mapping:ids")
_PREFIX = hashlib.sha1(NAMESPACE.bytes, usedforsecurity=False)


def entity_id(system: str, resource_type: str, key: str) -> str:
    """The id of the ``resource_type`` resource for ``key`` in source ``system``.

    Equal to ``str(uuid.uuid5(NAMESPACE, f"{system}|{resource_type}|{key}"))``, computed
    without building ``UUID`` objects: ids are made for every resource of every record.
    """
    digest = _PREFIX.copy()
    digest.update(f"{system}|{resource_type}|{key}".encode())
    raw = bytearray(digest.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def record_key(record_id: str, rule: str, repeat_key: str | None = None) -> str:
    """The entity key of what a record-scoped rule makes."""
    if repeat_key is None:
        return f"{record_id}/{rule}"
    return f"{record_id}/{rule}/{repeat_key}"
