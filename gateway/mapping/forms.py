"""Reading form definitions: what questions a form has, their types, groups and repeats.

Three formats, one neutral tree of ``FormNode``:

* **XLSForm** (``.xlsx``, ``.xls``, ``.csv``), what ODK, Kobo and CHT forms are
  written in: parsed by ``pyxform`` (the ODK reference converter) into its JSON form, so
  aliases (``select one``, ``begin repeat``), choice lists and the added ``meta`` group are
  exactly what ODK tools make of the file;
* **XForm XML** (``.xml``), what ODK Central serves and ``cht-conf`` deploys: the primary
  ``<instance>`` is the shape of a submission, ``<bind nodeset type calculate>`` gives the
  types, ``<repeat nodeset>`` the repeats and ``<item>``/``<itemset>`` the choices (parsed
  with ``defusedxml``: a form file is outside input);
* **CommCare app JSON** (``.json``): the Application Structure API
  (``/a/<domain>/api/v0.5/application/<app_id>/``) or one of its ``objects``: modules →
  forms → ``questions`` with ``value`` paths (``/data/vitals/weight_kg``), ``type``,
  ``repeat`` and ``options``. ``form`` picks one form by xmlns, unique id or name.

Types are brought to one vocabulary (``KINDS``); what the source cannot type (a calculate,
a hidden value) is ``any``. Nothing here knows how a source lays a submission out: see
``formschema.py``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

from gateway.errors import ConfigError

__all__ = ["KINDS", "XLSFORM_SUFFIXES", "FormError", "FormNode", "read_form"]

#: The question types a form can declare, as the checks see them.
KINDS = frozenset({
    "text", "integer", "decimal", "date", "datetime", "time", "boolean", "select_one",
    "select_multiple", "geopoint", "binary", "any", "group", "repeat",
})  # fmt: skip
XLSFORM_SUFFIXES = (".xlsx", ".xls", ".csv")

# XLSForm types as pyxform writes them in its JSON → KINDS (anything else: text).
_XLSFORM_KINDS = {
    "integer": "integer", "int": "integer", "decimal": "decimal", "range": "decimal",
    "date": "date", "datetime": "datetime", "dateTime": "datetime", "time": "time",
    "start": "datetime", "end": "datetime", "today": "date", "geopoint": "geopoint",
    "calculate": "any", "hidden": "any", "note": "any", "image": "binary", "audio": "binary",
    "video": "binary", "file": "binary", "background-audio": "binary",
}  # fmt: skip
# XForm bind types (with or without an ``xsd:`` prefix) → KINDS.
_XFORM_KINDS = {
    "int": "integer", "integer": "integer", "long": "integer", "short": "integer",
    "decimal": "decimal", "double": "decimal", "float": "decimal", "date": "date",
    "dateTime": "datetime", "time": "time", "boolean": "boolean", "select1": "select_one",
    "select": "select_multiple", "geopoint": "geopoint", "binary": "binary", "string": "text",
}  # fmt: skip
# CommCare question ``type`` → KINDS.
_COMMCARE_KINDS = {
    "Text": "text", "PhoneNumber": "text", "Barcode": "text", "Int": "integer",
    "Long": "integer", "Double": "decimal", "Date": "date", "DateTime": "datetime",
    "Time": "time", "Select": "select_one", "MSelect": "select_multiple",
    "Geopoint": "geopoint", "Image": "binary", "Audio": "binary", "Video": "binary",
    "Signature": "binary", "Group": "group", "FieldList": "group", "Repeat": "repeat",
    "DataBindOnly": "any", "Trigger": "any",
}  # fmt: skip
_XF = "{http://www.w3.org/2002/xforms}"
_JR_TEMPLATE = "{http://openrosa.org/javarosa}template"
_JR_PRELOAD = "{http://openrosa.org/javarosa}preload"


class FormError(ConfigError):
    """A form definition that cannot be read (missing, malformed, or not a form)."""


@dataclass(slots=True)
class FormNode:
    """One question, group or repeat of a form; the form itself is a ``group``."""

    name: str
    kind: str
    children: list[FormNode] = field(default_factory=list)
    choices: list[str] | None = None  # select_one / select_multiple answer values, when listed

    def child(self, name: str) -> FormNode:
        """The child group called ``name``, made if missing (paths build the tree)."""
        for node in self.children:
            if node.name == name:
                return node
        made = FormNode(name, "group")
        self.children.append(made)
        return made


def read_form(path: Path, form: str | None = None) -> FormNode:
    """The question tree of the form definition at ``path`` (by its suffix); raises ``FormError``."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FormError(f"{path.name}: no such file")
    if suffix in XLSFORM_SUFFIXES:
        return _read_xlsform(path)
    if suffix == ".xml":
        return _read_xform(path)
    if suffix == ".json":
        return _read_commcare(path, form)
    raise FormError(f"{path.name}: not a form definition (XLSForm {', '.join(XLSFORM_SUFFIXES)}, "
                    "XForm .xml, CommCare app .json)")


# --------------------------------------------------------------------------- XLSForm


def _read_xlsform(path: Path) -> FormNode:
    from pyxform.builder import create_survey_element_from_dict
    from pyxform.errors import PyXFormError  # imported here: only a set with a form needs it
    from pyxform.xls2json import parse_file_to_json

    try:
        survey = parse_file_to_json(str(path), warnings=[])
        create_survey_element_from_dict(survey)  # what ODK tools refuse (an unknown type …) is refused
    except PyXFormError as exc:
        raise FormError(f"{path.name}: {exc}") from exc
    except (OSError, ValueError, KeyError) as exc:  # an unreadable workbook
        raise FormError(f"{path.name}: cannot read the XLSForm: {exc}") from exc
    return _xlsform_node(survey)


def _xlsform_node(element: dict[str, Any]) -> FormNode:
    kind_text = str(element.get("type", ""))
    children = [_xlsform_node(child) for child in element.get("children") or [] if child.get("name")]
    if kind_text in ("survey", "group", "repeat"):
        return FormNode(str(element.get("name", "")), "repeat" if kind_text == "repeat" else "group", children)
    choices = [str(choice["name"]) for choice in element.get("choices") or [] if "name" in choice] or None
    if kind_text.startswith(("select one", "select_one")):
        return FormNode(element["name"], "select_one", choices=choices)
    if kind_text.startswith(("select all that apply", "select_multiple", "select multiple")):
        return FormNode(element["name"], "select_multiple", choices=choices)
    return FormNode(element["name"], _XLSFORM_KINDS.get(kind_text, "text"))


# --------------------------------------------------------------------------- XForm


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _read_xform(path: Path) -> FormNode:
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    try:
        html = ElementTree.parse(str(path)).getroot()
    except (ElementTree.ParseError, DefusedXmlException, OSError) as exc:
        raise FormError(f"{path.name}: not well-formed XML: {exc}") from exc
    model = next((node for node in html.iter() if _local(node.tag) == "model"), None)
    instances = [node for node in (list(model) if model is not None else []) if _local(node.tag) == "instance"]
    if model is None or not instances or len(instances[0]) == 0:
        raise FormError(f"{path.name}: an XForm needs a <model> with a primary <instance>")
    root = instances[0][0]
    secondary = {node.get("id"): node for node in instances[1:] if node.get("id")}
    binds = {node.get("nodeset", ""): node for node in model if _local(node.tag) == "bind"}
    repeats = {node.get("nodeset", "") for node in html.iter() if _local(node.tag) == "repeat"}
    body = next((node for node in html if _local(node.tag) == "body"), None)
    controls = {node.get("ref", "") for node in (body.iter() if body is not None else ()) if node.get("ref")}
    choices = {
        node.get("ref", ""): ("select_one" if _local(node.tag) == "select1" else "select_multiple",
                              _xform_choices(node, secondary))
        for node in html.iter() if _local(node.tag) in ("select1", "select")
    }
    return _xform_node(root, "/" + _local(root.tag), _Model(binds, repeats, choices, controls))


@dataclass(frozen=True, slots=True)
class _Model:
    """What an XForm says about its instance nodes, by absolute path."""

    binds: dict[str, Element]
    repeats: set[str]
    choices: dict[str, tuple[str, list[str] | None]]  # select kind and listed values
    controls: set[str]  # nodes the body shows as a question


def _xform_node(element: Element, path: str, model: _Model) -> FormNode:
    name = _local(element.tag)
    if len(element):
        children: list[FormNode] = []
        for child in element:
            node = _xform_node(child, f"{path}/{_local(child.tag)}", model)
            if all(existing.name != node.name for existing in children):  # a repeat's template and rows
                children.append(node)
        repeat = path in model.repeats or element.get(_JR_TEMPLATE) is not None
        return FormNode(name, "repeat" if repeat else "group", children)
    bind = model.binds.get(path)
    if bind is None or bind.get("calculate") is not None:
        return FormNode(name, "any")  # a calculate's bind type is rarely what it holds
    kind = _XFORM_KINDS.get(str(bind.get("type", "string")).split(":")[-1], "text")
    if path in model.choices:  # ODK binds selects as strings: the body control says which select
        kind, listed = model.choices[path]
        return FormNode(name, kind, choices=listed)
    if kind == "text" and path not in model.controls and bind.get(_JR_PRELOAD) is None:
        return FormNode(name, "any")  # a hidden value (CHT inputs, CommCare hidden values): untyped
    return FormNode(name, kind)


def _xform_choices(select: Element, secondary: dict[str | None, Element]) -> list[str] | None:
    values = [
        (item.findtext(f"{_XF}value") or item.findtext("value") or "").strip()
        for item in select if _local(item.tag) == "item"
    ]
    if values:
        return values
    itemset = next((node for node in select if _local(node.tag) == "itemset"), None)
    if itemset is None:
        return None
    found = re.match(r"\s*instance\(\s*'([^']+)'\s*\)", itemset.get("nodeset", ""))
    value = next((node for node in itemset if _local(node.tag) == "value"), None)
    instance = secondary.get(found.group(1)) if found else None
    if instance is None or value is None:
        return None  # choices from a file or an external instance: not listed here
    ref = value.get("ref", "name")
    return [
        (node.text or "").strip()
        for item in instance.iter() if _local(item.tag) == "item"
        for node in item if _local(node.tag) == ref
    ] or None


# --------------------------------------------------------------------------- CommCare app


def _read_commcare(path: Path, form: str | None) -> FormNode:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FormError(f"{path.name}: not JSON: {exc}") from exc
    apps = data.get("objects", [data]) if isinstance(data, dict) else []
    forms = [
        candidate
        for app in apps if isinstance(app, dict)
        for module in app.get("modules") or [] if isinstance(module, dict)
        for candidate in module.get("forms") or [] if isinstance(candidate, dict)
    ]
    if not forms:
        raise FormError(f"{path.name}: no modules[].forms[] (a CommCare Application Structure API answer)")
    chosen = [candidate for candidate in forms if form is None or form in _form_names(candidate)]
    if len(chosen) != 1:
        known = "; ".join(str(candidate.get("xmlns")) for candidate in forms)
        what = f"no form {form!r}" if form is not None and not chosen else "several forms: say which with form"
        raise FormError(f"{path.name}: {what} (xmlns: {known})")
    return _commcare_node(chosen[0], path)


def _form_names(form: dict[str, Any]) -> set[str]:
    names = form.get("name")
    return {str(form.get("xmlns")), str(form.get("unique_id"))} | (
        {str(name) for name in names.values()} if isinstance(names, dict) else {str(names)}
    )


def _commcare_node(form: dict[str, Any], path: Path) -> FormNode:
    root = FormNode("data", "group")
    for question in form.get("questions") or []:
        value = str(question.get("value", "")) if isinstance(question, dict) else ""
        steps = [step for step in value.split("/") if step]
        if len(steps) < 2:
            raise FormError(f"{path.name}: question value {value!r} is not a /data/... path")
        node = root
        for step in steps[1:-1]:
            node = node.child(step)
        repeat = [step for step in str(question.get("repeat") or "").split("/") if step][1:]
        if repeat:  # the enclosing repeat, even when the API left group questions out
            target = root
            for step in repeat:
                target = target.child(step)
            target.kind = "repeat"
        kind = _COMMCARE_KINDS.get(str(question.get("type")), "text")
        if kind in ("group", "repeat"):
            node.child(steps[-1]).kind = kind
            continue
        options = question.get("options")
        choices = [str(option["value"]) for option in options if "value" in option] if options else None
        node.children.append(FormNode(steps[-1], kind, choices=choices))
    return root
