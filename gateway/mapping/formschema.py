"""The record a source sends for a form: a form's question tree laid out the source's way.

The same XLSForm reaches the gateway in different shapes depending on who sends it:

* ``odk``: an ODK Central OData ``Submissions`` row fetched with ``$expand=*``: groups are
  nested objects (``visit.household_id``), a repeat is a list of objects that each carry
  their own ``__id``, plus ``__id`` and ``__system`` at the top;
* ``kobo``: a KoboToolbox REST Service (JSON) record: flat keys holding the full path
  (``vitals/weight_kg``); a repeat is a list under its full path whose rows use full paths
  too (``med_refills/drug``); plus Kobo's ``_id``, ``_uuid``, ``_submission_time`` …;
* ``cht``: a CHT report pushed by outbound push as ``doc``: the form's fields nested under
  ``doc.fields`` (``doc.fields.group_fever.patient_temperature``), plus the document's own
  members (``_id``, ``form``, ``reported_date``, ``contact`` …);
* ``commcare``: CommCare HQ form forwarding (``form_json``): the questions nested under
  ``form`` (``form.vitals.weight_kg``), plus ``form.@xmlns``, ``form.meta``, ``form.case``
  and the envelope (``id``, ``received_on`` …).

Parts of the envelope that vary (``__system``, ``form.case``, ``doc.contact``) are left
open: no member below them is judged from the form.
"""

from __future__ import annotations

from typing import Any

from gateway.mapping.forms import FormNode
from gateway.mapping.inputschema import InputSchema

__all__ = ["LAYOUTS", "record_schema"]

#: An envelope: member → ``None`` (a value, or an open object) or a nested envelope.
Envelope = dict[str, Any]

_ODK: Envelope = {"__id": None, "__system": None}
_KOBO: Envelope = dict.fromkeys((
    "_id", "_uuid", "_submission_time", "_xform_id_string", "_status", "_geolocation", "_tags",
    "_notes", "_validation_status", "_submitted_by", "_attachments", "__version__", "formhub/uuid",
    "meta/instanceID", "meta/rootUuid", "meta/deprecatedID",
))  # fmt: skip
_CHT_DOC: Envelope = dict.fromkeys((
    "_id", "_rev", "_deleted", "_attachments", "type", "form", "form_version", "content_type",
    "reported_date", "from", "contact", "hidden_fields", "geolocation", "geolocation_log", "errors",
    "archived", "sms_message",
))  # fmt: skip
_COMMCARE: Envelope = {
    **dict.fromkeys((
        "id", "archived", "received_on", "server_modified_on", "indexed_on", "edited_on",
        "edited_by_user_id", "app_id", "build_id", "domain", "metadata", "attachments", "problem",
        "initial_processing_complete", "is_phone_submission", "resource_uri", "type", "uiversion",
        "version",
    )),
    "form": dict.fromkeys(("#type", "@name", "@uiVersion", "@version", "@xmlns", "meta", "case")),
}  # fmt: skip

LAYOUTS = ("odk", "kobo", "cht", "commcare")


def record_schema(form: FormNode, layout: str, source: str) -> InputSchema:
    """The schema of the records a ``layout`` source sends for ``form`` (declared in file ``source``)."""
    root = InputSchema(is_object=True, form=source)
    if layout == "odk":
        _envelope(root, _ODK)
        _nested(form, root, source, row_id="__id")
    elif layout == "kobo":
        _envelope(root, _KOBO)
        _flat(form, root, source, "")
    elif layout == "cht":
        doc = root.children.setdefault("doc", InputSchema(is_object=True))
        _envelope(doc, _CHT_DOC)
        _nested(form, doc.children.setdefault("fields", InputSchema(is_object=True)), source)
    elif layout == "commcare":
        _envelope(root, _COMMCARE)
        _nested(form, root.children["form"], source)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return root


def _envelope(node: InputSchema, envelope: Envelope) -> None:
    node.is_object = True
    for key, inner in envelope.items():
        child = node.children.setdefault(key, InputSchema())
        if inner is not None:
            _envelope(child, inner)


def _leaf(question: FormNode, source: str) -> InputSchema:
    return InputSchema(kind=question.kind, choices=question.choices, form=source)


def _nested(group: FormNode, node: InputSchema, source: str, row_id: str | None = None) -> None:
    """Groups as objects, repeats as lists of objects (one schema node: lists are walked into)."""
    node.is_object = True
    for question in group.children:
        if question.kind not in ("group", "repeat"):
            node.children[question.name] = _leaf(question, source)
            continue
        child = node.children.setdefault(question.name, InputSchema(is_object=True, kind=question.kind, form=source))
        if question.kind == "repeat" and row_id is not None:
            child.children.setdefault(row_id, InputSchema())
            node.children.setdefault(f"{question.name}@odata.navigationLink", InputSchema())
        _nested(question, child, source, row_id)


def _flat(group: FormNode, node: InputSchema, source: str, prefix: str) -> None:
    """Kobo: every member named by its full path; a repeat's rows too."""
    node.is_object = True
    for question in group.children:
        path = f"{prefix}{question.name}"
        if question.kind == "group":
            _flat(question, node, source, f"{path}/")
        elif question.kind == "repeat":
            rows = node.children.setdefault(path, InputSchema(is_object=True, kind="repeat", form=source))
            _flat(question, rows, source, f"{path}/")
        else:
            node.children[path] = _leaf(question, source)
