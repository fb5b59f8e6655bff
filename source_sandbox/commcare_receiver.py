"""CommCare HQ's form submission receiver (``POST /a/{domain}/receiver/api/`` or ``/receiver/{app_id}/``).

Written from CommCare's submission API docs (``../shared/apis/commcare.md`` §5): the body is
the XForm instance, raw or as the multipart field ``xml_submission_file``; ``meta``
(``http://openrosa.org/jr/xforms``) carries ``instanceID``; case blocks
(``http://commcarehq.org/case/transaction/v2``) carry ``case_id``, ``date_modified`` and
``user_id`` with ``create``/``update``/``close``. Reusing an ``instanceID`` of the project
*replaces* that form (how edits work): a case lists each form once in ``xform_ids``. Answers
are OpenRosa XML: 201 ``submit_success``; a form naming an unknown case (without ``create``) is
201 ``submit_error`` ("received but not processed"), or 422 ``processing_failure`` with
``X-OpenRosa-Version: 3.0``; malformed XML is 500.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any
from xml.etree import ElementTree as ET

from source_sandbox.clock import ServerClock

CASE_NS = "{http://commcarehq.org/case/transaction/v2}"
META_NS = "{http://openrosa.org/jr/xforms}"
_RESPONSE = ('<OpenRosaResponse xmlns="http://openrosa.org/http/response">'
             '<message nature="{nature}">{text}</message></OpenRosaResponse>')  # fmt: skip


def open_rosa(nature: str, text: str) -> str:
    """An OpenRosa response body."""
    return _RESPONSE.format(nature=nature, text=text)


def _plain(element: ET.Element) -> Any:
    """An element as Form API JSON: text for a leaf, an object of children otherwise."""
    children = list(element)
    if not children:
        return element.text or ""
    out: dict[str, Any] = {}
    for child in children:
        out[child.tag.rsplit("}", 1)[-1]] = _plain(child)
    return out


class Receiver:
    """Processes submissions into the forms and cases of a ``CommCare`` stand-in's project spaces."""

    def __init__(self, forms: dict[str, list[dict[str, Any]]], cases: dict[str, list[dict[str, Any]]],
                 clock: ServerClock) -> None:  # fmt: skip
        self.forms = forms
        self.cases = cases
        self.clock = clock

    def submit(self, domain: str, body: bytes, *, open_rosa_3: bool = False) -> tuple[int, str]:
        """Process one submission: the HTTP status and the OpenRosa body."""
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            return 500, open_rosa("submit_error", f"Invalid XML: {exc}")
        meta = root.find(f"{META_NS}meta")
        instance_id = (meta.findtext(f"{META_NS}instanceID") if meta is not None else None) or str(uuid.uuid4())
        blocks = root.findall(f".//{CASE_NS}case")
        known = {case["case_id"] for case in self.cases.get(domain, [])}
        for block in blocks:
            if block.get("case_id") not in known and block.find(f"{CASE_NS}create") is None:
                message = f"IllegalCaseId: case {block.get('case_id')} not found"
                return (422, open_rosa("processing_failure", message)) if open_rosa_3 else \
                    (201, open_rosa("submit_error", message))  # fmt: skip
        now = self.clock.commcare()
        xmlns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
        data = {"@xmlns": xmlns, **_plain(root)}
        form = {"id": instance_id, "domain": domain, "received_on": now, "server_modified_on": now,
                "indexed_on": now, "archived": False, "form": data}  # fmt: skip
        forms = self.forms.setdefault(domain, [])
        forms[:] = [f for f in forms if f["id"] != instance_id] + [form]  # the same instanceID replaces
        for block in blocks:
            self._apply(domain, instance_id, block, now)
        return 201, open_rosa("submit_success", "   √   ")

    def _apply(self, domain: str, instance_id: str, block: ET.Element, now: str) -> None:
        cases = self.cases.setdefault(domain, [])
        case_id = block.get("case_id", "")
        case = next((copy.deepcopy(c) for c in cases if c["case_id"] == case_id), None)
        if case is None:
            create = block.find(f"{CASE_NS}create")
            fields = _plain(create) if create is not None else {}
            case = {"case_id": case_id, "domain": domain, "case_type": fields.get("case_type", ""),
                    "case_name": fields.get("case_name", ""), "owner_id": fields.get("owner_id", ""),
                    "closed": False, "date_closed": None, "properties": {}, "indices": {}, "xform_ids": []}  # fmt: skip
        update = block.find(f"{CASE_NS}update")
        if update is not None:
            case["properties"].update({child.tag.rsplit("}", 1)[-1]: child.text or "" for child in update})
        if block.find(f"{CASE_NS}close") is not None:
            case["closed"], case["date_closed"] = True, now
        if instance_id not in case["xform_ids"]:
            case["xform_ids"].append(instance_id)
        case["last_modified"] = case["server_last_modified"] = now
        case["indexed_on"] = now
        cases[:] = [c for c in cases if c["case_id"] != case_id] + [case]
