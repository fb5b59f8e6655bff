"""Searchset and history Bundles, spliced from stored JSON bytes.

Search results are sent as they are stored; wrapping them by concatenating bytes
avoids parsing and re-serialising every resource on the read path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from urllib.parse import urlencode

from gateway import jsonio
from gateway.ids import uuid4_text
from gateway.search import format_instant
from gateway.store import StoredResource

_SEARCH_MATCH = b',"search":{"mode":"match"}}'
_SEARCH_INCLUDE = b',"search":{"mode":"include"}}'
_SEARCH_OUTCOME = b',"search":{"mode":"outcome"}}'


def _entry(base: str, res: StoredResource, tail: bytes, content: bytes | None = None) -> bytes:
    full_url = jsonio.dumps(f"{base}/{res.type}/{res.id}")
    return b'{"fullUrl":' + full_url + b',"resource":' + (content or res.content) + tail


def searchset(
    base: str,
    matches: Iterable[StoredResource],
    *,
    total: int | None,
    links: list[tuple[str, str]],
    included: Iterable[StoredResource] = (),
    outcome: dict[str, object] | None = None,
    transform: dict[tuple[str, str], bytes] | None = None,
) -> bytes:
    """A ``searchset`` Bundle; ``transform`` replaces the bytes of subsetted resources."""
    head: dict[str, object] = {
        "resourceType": "Bundle",
        "id": uuid4_text(),
        "meta": {"lastUpdated": format_instant(_now())},
        "type": "searchset",
    }
    if total is not None:
        head["total"] = total
    if links:
        head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    transform = transform or {}
    entries = [_entry(base, r, _SEARCH_MATCH, transform.get((r.type, r.id))) for r in matches]
    entries.extend(_entry(base, r, _SEARCH_INCLUDE, transform.get((r.type, r.id))) for r in included)
    if outcome is not None:
        entries.append(b'{"resource":' + jsonio.dumps(outcome) + _SEARCH_OUTCOME)
    return _wrap(head, entries)


def history(base: str, versions: Iterable[StoredResource], *, total: int, links: list[tuple[str, str]]) -> bytes:
    """A ``history`` Bundle, newest version first, with tombstones for deletions."""
    head: dict[str, object] = {
        "resourceType": "Bundle",
        "id": uuid4_text(),
        "meta": {"lastUpdated": format_instant(_now())},
        "type": "history",
        "total": total,
    }
    if links:
        head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    entries = []
    for res in versions:
        full_url = jsonio.dumps(f"{base}/{res.type}/{res.id}")
        # How the version was made (bundle-definitions.html#Bundle.entry.request: "for history, it shows
        # how the entry was processed to create the version"): the store's record of it when read.
        created = res.version == 1 if res.created is None else res.created
        response = {
            "status": "410 Gone" if res.deleted else ("201 Created" if created else "200 OK"),
            "etag": res.etag,
            "lastModified": format_instant(res.last_updated.timestamp()),
        }
        if res.deleted:
            request = {"method": "DELETE", "url": f"{res.type}/{res.id}"}
            entries.append(
                b'{"fullUrl":' + full_url + b',"request":' + jsonio.dumps(request)
                + b',"response":' + jsonio.dumps(response) + b"}"
            )  # fmt: skip
            continue
        method = res.method or ("POST" if res.version == 1 else "PUT")
        url = res.type if method == "POST" else f"{res.type}/{res.id}"
        request = {"method": method, "url": url}
        entries.append(
            b'{"fullUrl":' + full_url + b',"resource":' + res.content + b',"request":' + jsonio.dumps(request)
            + b',"response":' + jsonio.dumps(response) + b"}"
        )  # fmt: skip
    return _wrap(head, entries)


def _wrap(head: dict[str, object], entries: list[bytes]) -> bytes:
    start = jsonio.dumps(head)
    if not entries:
        return start
    return start[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


def _now() -> float:
    return time.time()


def page_links(
    url: str,
    used: list[tuple[str, str]],
    count: int,
    offset: int,
    total: int | None,
    page_len: int,
    snapshot: int | None,
    *,
    paged: bool = True,
    cursor: str | None = None,
    after: str | None = None,
    more: bool | None = None,
) -> list[tuple[str, str]]:
    """A page's ``self`` link and, when there are more, its ``next`` and ``previous`` links
    (none when not ``paged``: ``_summary=count`` has no pages, only a total).

    ``cursor`` is the ``_cursor`` this page was read after (it belongs in ``self``), ``after`` the one
    the next page starts after: ``next`` carries it, so the next page starts after this page's last
    match wherever deletions meanwhile moved it (``_offset`` stays, for ``previous``). ``more``: a
    page read after a cursor knows whether a match follows; its offset no longer tells.
    """
    params = [(k, v) for k, v in used if k != "_count"]

    def link(at: int, start: str | None) -> str:
        extra = [("_count", str(count)), ("_offset", str(at))]
        if snapshot is not None:
            extra.append(("_snapshot", str(snapshot)))
        if start is not None:
            extra.append(("_cursor", start))
        return f"{url}?{urlencode(params + extra)}"

    links = [("self", link(offset, cursor))]
    if not paged:
        return links
    if more is None:
        more = offset + count < total if total is not None else page_len >= count > 0
    if more and count > 0:
        links.append(("next", link(offset + count, after)))
    if offset > 0 and count > 0:
        links.append(("previous", link(max(0, offset - count), None)))
    return links
