"""A CommCare form submission from an outbound payload: the XForm instance with a case block.

The payload (from a set's ``outbound/*.yaml``) is ``{"xmlns", "name"?, "fields": {…}, "case":
{"case_id", "update": {…}, "close"?}, "meta": {"instanceID", "timeStart", "timeEnd", …}}``;
the connector fills ``meta.deviceID/username/userID`` from the destination options. The case
block follows ``http://commcarehq.org/case/transaction/v2`` (``case_id``, ``date_modified``,
``user_id`` attributes), ``meta`` ``http://openrosa.org/jr/xforms``.
"""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree as ET

__all__ = ["to_xform"]

CASE_NS = "http://commcarehq.org/case/transaction/v2"
META_NS = "http://openrosa.org/jr/xforms"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_META_ORDER = ("deviceID", "timeStart", "timeEnd", "username", "userID", "instanceID")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _children(parent: ET.Element, values: dict[str, Any], namespace: str = "") -> None:
    for key, value in values.items():
        if not _NAME.match(key) or key.lower().startswith("xml"):
            raise ValueError(f"{key!r} is not a valid XML element name")
        child = ET.SubElement(parent, namespace + key)
        if isinstance(value, dict):
            _children(child, value, namespace)
        else:
            child.text = _text(value)


def to_xform(payload: dict[str, Any]) -> bytes:
    """The form instance XML; raises ``ValueError`` on a payload CommCare would not take."""
    xmlns = payload.get("xmlns")
    meta = payload.get("meta") or {}
    if not isinstance(xmlns, str) or not isinstance(meta, dict) or not meta.get("instanceID"):
        raise ValueError("an outbound CommCare payload needs xmlns and meta.instanceID")
    root = ET.Element("data", {"xmlns": xmlns, **({"name": str(payload["name"])} if payload.get("name") else {})})
    _children(root, payload.get("fields") or {})
    case = payload.get("case")
    if isinstance(case, dict) and case.get("case_id"):
        attributes = {"case_id": str(case["case_id"]), "date_modified": str(meta.get("timeEnd", "")),
                      "user_id": str(meta.get("userID", ""))}  # fmt: skip
        block = ET.SubElement(root, f"{{{CASE_NS}}}case", attributes)
        if case.get("update"):
            _children(ET.SubElement(block, f"{{{CASE_NS}}}update"), case["update"], f"{{{CASE_NS}}}")
        if case.get("close") is True:
            ET.SubElement(block, f"{{{CASE_NS}}}close")
    meta_element = ET.SubElement(root, f"{{{META_NS}}}meta")
    for key in _META_ORDER:
        if meta.get(key) not in (None, ""):
            ET.SubElement(meta_element, f"{{{META_NS}}}{key}").text = _text(meta[key])
    ET.register_namespace("n0", CASE_NS)
    ET.register_namespace("orx", META_NS)
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml
