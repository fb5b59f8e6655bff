"""A transaction's fullUrls replaced where they stand as links outside ``Reference.reference``.

http.html#trules: "Servers SHALL replace all matching links in the bundle, whether they are found
in the resource ids, resource references, elements of type uri, url, oid, uuid, and <a href="" &
<img src="" in the narrative. Elements of type canonical are not replaced." References are
resolved by the transaction itself (with their errors); this walk, typed by the R4 element
table, covers the rest: ``Attachment.url`` naming a Binary of the Bundle, an extension's
``valueUri``, a narrative's links. A string, id, code or canonical element that happens to
hold a fullUrl (``Identifier.value``, ``meta.profile``) keeps it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from gateway.r4 import load_table

_LINK_TYPES = frozenset({"uri", "url", "oid", "uuid"})
_RESOURCE = "Resource"  # the element table's name for "any resource" (contained)
# href="…" or src='…' in a narrative: the attribute value is replaced when it is a fullUrl.
_NARRATIVE_LINK = re.compile(r"""(\b(?:href|src)\s*=\s*)(["'])([^"'<>]*)\2""")


@cache
def _types() -> dict[str, dict[str, str]]:
    types: dict[str, Any] = load_table("r4-elements.json")["types"]
    return {name: {prop: spec.removesuffix("[]") for prop, spec in entry["p"].items()} for name, entry in types.items()}


def replace_full_urls(resource: dict[str, Any], links: Mapping[str, str]) -> None:
    """Replace, in place, every uri/url/oid/uuid value and narrative link that is a ``urn:uuid:`` or
    ``urn:oid:`` key of ``links``.

    Only those temporary names: an absolute fullUrl may also be a canonical URL the Bundle's
    resources name as code systems (``Coding.system`` is a uri), which must not become ``CodeSystem/id``.
    """
    rtype = resource.get("resourceType")
    temporary = {key: value for key, value in links.items() if key.startswith(("urn:uuid:", "urn:oid:"))}
    if temporary and isinstance(rtype, str):
        _walk(resource, rtype, temporary)


def _walk(node: dict[str, Any], tname: str, links: Mapping[str, str]) -> None:
    props = _types().get(tname)
    if props is None:
        return
    for key, value in node.items():
        spec = props.get(key)
        if spec is None:
            continue
        if spec in _LINK_TYPES:
            if isinstance(value, str):
                node[key] = links.get(value, value)
            elif isinstance(value, list):
                node[key] = [links.get(v, v) if isinstance(v, str) else v for v in value]
        elif spec == "xhtml":
            if isinstance(value, str) and ("href" in value or "src" in value):
                node[key] = _NARRATIVE_LINK.sub(lambda m: _narrative_link(m, links), value)
        elif spec in _types() or spec == _RESOURCE:
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, dict):
                    ctype = child.get("resourceType") if spec == _RESOURCE else spec
                    if isinstance(ctype, str):
                        _walk(child, ctype, links)


def _narrative_link(match: re.Match[str], links: Mapping[str, str]) -> str:
    target = links.get(match.group(3))
    if target is None:
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{target}{match.group(2)}"
