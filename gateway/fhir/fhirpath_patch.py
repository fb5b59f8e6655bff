"""FHIRPath Patch (fhirpatch.html): a ``Parameters`` resource of operations applied to a resource.

Each ``operation`` parameter has parts ``type`` (add | insert | delete | replace | move),
``path`` (a FHIRPath expression), and as its type needs ``name``, ``value`` (a ``value[x]``,
or parts for an element no data type describes, such as ``Patient.contact``), ``index``,
``source`` and ``destination``. The rules applied (R4):

* ``add`` appends ``value`` as element ``name`` of the one element ``path`` selects; on an
  element that does not repeat, only when it is absent;
* ``insert`` puts ``value`` at ``index`` (0 to the list's length) of the list ``path`` names;
* ``delete`` removes the one element ``path`` selects, and does nothing when it selects none;
* ``replace`` puts ``value`` in place of the one element ``path`` selects;
* ``move`` moves the element at ``source`` of the list ``path`` names to ``destination``.

``path`` is evaluated on a copy of the resource in which each object carries a marker and each
string or number is an instance that knows where it sits, so what the path selects is found again
in the resource itself (``Patient.name.given.first()``); a boolean, which Python cannot mark, is
found through the path's last step, an element name with an optional ``[n]``. An ``add`` of
``extension`` or ``id`` onto a primitive goes to its ``_x`` object.

Element names, repetition and choice types come from the R4 element table of
``gateway.fhir.strict``. The patched resource is validated by the caller, like any update.
Messages name the operation and its path, never a stored value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.errors import FhirError
from gateway.fhir.fhirpath import FhirPathError, check_fhirpath, compile_fhirpath, function_names, variables_of
from gateway.fhir.strict import KIND_COMPLEX, KIND_RESOURCE, ComplexType, StrictChecker, default_checker

__all__ = ["MAX_OPERATIONS", "OPERATIONS", "apply_fhirpath_patch", "is_fhirpath_patch"]

OPERATIONS = ("add", "insert", "delete", "replace", "move")
#: Operations a patch may hold at most.
MAX_OPERATIONS = 500
#: The start of the key each object of the marked copy carries, its number after it (no FHIR element
#: name holds a NUL). It starts with ``_`` and holds an empty list, so ``children()`` skips it and
#: ``descendants()`` finds nothing in it, as if it were not there.
_MARK = "_\x00"
#: A path's last step: an element name, maybe indexed.
_LAST_STEP = re.compile(r"^(?P<parent>.+)\.(?P<member>[A-Za-z][A-Za-z0-9_]*)(?:\[(?P<index>\d+)\])?\s*$", re.S)
_PARTS = frozenset({"type", "path", "name", "value", "index", "source", "destination"})
#: Longer paths are refused (an expression's cost grows with its length; real ones are short).
_MAX_PATH = 1000
#: Functions a path may not call: ``trace`` writes what it sees to the process's output (patient data).
_REFUSED_FUNCTIONS = frozenset({"trace"})
_PATH_CACHE: dict[str, Callable[[Any, Any], list[Any]]] = {}


def is_fhirpath_patch(body: Any) -> bool:
    """Whether ``body`` is a FHIRPath Patch (a Parameters resource) rather than a JSON Patch."""
    return isinstance(body, dict) and body.get("resourceType") == "Parameters"


@dataclass(frozen=True, slots=True)
class _Operation:
    n: int
    type: str
    path: str
    name: str | None
    value: Any  # ("value", key suffix, JSON) or ("parts", [part, ...]) or None
    index: int | None
    source: int | None
    destination: int | None

    @property
    def where(self) -> str:
        return f"Parameters.parameter[{self.n}]"


class _Str(str):
    """A string of the marked copy, knowing where it sits (fhirpathpy hands strings on as they are)."""

    slot: _Slot


class _Int(int):
    """An integer of the marked copy, knowing where it sits."""

    slot: _Slot


class _Float(float):
    """A decimal of the marked copy, knowing where it sits."""

    slot: _Slot


_LOCATED = {str: _Str, int: _Int, float: _Float}


@dataclass(slots=True)
class _Node:
    """An object of the resource: itself, its type, and where it sits (None for the resource)."""

    obj: dict[str, Any]
    ctype: ComplexType | None
    owner: dict[str, Any] | None
    key: str
    index: int | None
    owner_ctype: ComplexType | None


def apply_fhirpath_patch(
    document: dict[str, Any], parameters: dict[str, Any], checker: StrictChecker | None = None
) -> dict[str, Any]:
    """``document`` (changed in place) with the FHIRPath Patch ``parameters`` applied; ``FhirError``
    400 when the patch is malformed, 422 when an operation does not fit the resource."""
    checker = checker or default_checker()
    for op in _operations(parameters):
        _apply(document, op, checker)
    return document


# -- reading the Parameters ------------------------------------------------------------------


def _malformed(message: str, where: str) -> FhirError:
    return FhirError(f"the FHIRPath Patch is not valid: {message}", status=400, code="invalid", expression=[where])


def _operations(parameters: dict[str, Any]) -> list[_Operation]:
    listed = parameters.get("parameter")
    if not isinstance(listed, list) or not listed:
        raise _malformed("it has no operation", "Parameters.parameter")
    if len(listed) > MAX_OPERATIONS:
        # Each operation evaluates its path over the whole resource, under the store's write lock.
        raise _malformed(f"it has more than {MAX_OPERATIONS} operations", "Parameters.parameter")
    return [_operation(n, p) for n, p in enumerate(listed)]


def _operation(n: int, parameter: Any) -> _Operation:
    where = f"Parameters.parameter[{n}]"
    if not isinstance(parameter, dict) or parameter.get("name") != "operation":
        raise _malformed("every parameter must be named 'operation'", f"{where}.name")
    parts = parameter.get("part")
    if not isinstance(parts, list):
        raise _malformed("an operation needs parts (type, path, ...)", f"{where}.part")
    found: dict[str, Any] = {}
    for m, part in enumerate(parts):
        name = part.get("name") if isinstance(part, dict) else None
        if name not in _PARTS:
            raise _malformed(f"unknown part {str(name)[:40]!r}", f"{where}.part[{m}].name")
        if name in found:
            raise _malformed(f"part {name!r} appears twice", f"{where}.part[{m}]")
        found[name] = part
    kind = _primitive(found, "type", "valueCode", where)
    if kind not in OPERATIONS:
        raise _malformed(f"type must be one of {', '.join(OPERATIONS)}", f"{where}.part.type")
    path = _primitive(found, "path", "valueString", where)
    if len(path) > _MAX_PATH:
        raise _malformed(f"the path is longer than {_MAX_PATH} characters", f"{where}.part.path")
    needs = {"add": ("name", "value"), "insert": ("value", "index"), "replace": ("value",),
             "move": ("source", "destination"), "delete": ()}[kind]  # fmt: skip
    for name in needs:
        if name not in found:
            raise _malformed(f"a {kind} operation needs a {name!r} part", f"{where}.part")
    value = _value(found["value"], f"{where}.part.value") if "value" in found else None
    return _Operation(
        n, kind, path,
        _primitive(found, "name", "valueString", where) if "name" in found else None,
        value,
        *(_integer(found, name, where) for name in ("index", "source", "destination")),
    )  # fmt: skip


def _primitive(found: dict[str, Any], name: str, key: str, where: str) -> str:
    value = found.get(name, {}).get(key)
    if not isinstance(value, str) or not value.strip():
        raise _malformed(f"part {name!r} needs a {key}", f"{where}.part.{name}")
    return value


def _integer(found: dict[str, Any], name: str, where: str) -> int | None:
    if name not in found:
        return None
    value = found[name].get("valueInteger")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _malformed(f"part {name!r} needs a valueInteger of 0 or more", f"{where}.part.{name}")
    return value


def _value(part: dict[str, Any], where: str) -> Any:
    keys = [k for k in part if k.startswith("value") and len(k) > 5 and k[5].isupper()]
    if len(keys) == 1 and "part" not in part:
        return ("value", keys[0][5:], part[keys[0]])
    if not keys and isinstance(part.get("part"), list) and part["part"]:
        return ("parts", part["part"])
    raise _malformed("a value part needs one value[x] or parts", where)


# -- finding what a path selects -------------------------------------------------------------


def _marked(document: dict[str, Any], checker: StrictChecker) -> tuple[dict[str, Any], list[_Node]]:
    """A copy of ``document`` whose objects carry their number in ``nodes``."""
    nodes: list[_Node] = []

    def copy(value: Any, ctype: ComplexType | None, owner: dict[str, Any] | None, owner_ctype: ComplexType | None,
             key: str, index: int | None) -> Any:
        if not isinstance(value, dict):
            located = _LOCATED.get(type(value))
            if located is None or owner is None:
                return value
            marked = located(value)
            marked.slot = _Slot(owner, key, index, owner_ctype)
            return marked
        nodes.append(_Node(value, ctype, owner, key, index, owner_ctype))
        out: dict[str, Any] = {f"{_MARK}{len(nodes) - 1}": []}
        for name, child in value.items():
            if isinstance(child, list):  # each item typed on its own: contained resources differ
                out[name] = [copy(item, _child_type(checker, ctype, name, item), value, ctype, name, i)
                             for i, item in enumerate(child)]  # fmt: skip
            else:
                out[name] = copy(child, _child_type(checker, ctype, name, child), value, ctype, name, None)
        return out

    return copy(document, _resource_type(checker, document), None, None, "", None), nodes


def _resource_type(checker: StrictChecker, value: Any) -> ComplexType | None:
    return checker.resource_type(value.get("resourceType")) if isinstance(value, dict) else None


def _child_type(checker: StrictChecker, ctype: ComplexType | None, name: str, child: Any) -> ComplexType | None:
    if ctype is None:
        return None
    prop = ctype.props.get(name)
    if prop is None:
        return checker.element_type if name.startswith("_") else None
    kind, arg = prop[0], prop[1]
    if kind == KIND_COMPLEX:
        return arg  # type: ignore[no-any-return]
    if kind == KIND_RESOURCE:
        return _resource_type(checker, child)
    return None


def _evaluate(op: _Operation, marked: dict[str, Any], path: str) -> list[Any]:
    run = _PATH_CACHE.get(path)
    if run is None:
        try:
            ast = check_fhirpath(path)
            run = compile_fhirpath(path)
        except FhirPathError as exc:
            raise _malformed(f"the path is not FHIRPath ({exc})", f"{op.where}.part.path") from exc
        if variables_of(ast):
            # ``%context`` inside ``select`` re-expands the whole resource per item: three levels of
            # it over 300 names is 27 million items, computed while the store's write lock is held.
            raise _malformed("a patch path reads the resource, not %variables", f"{op.where}.part.path")
        if _REFUSED_FUNCTIONS.intersection(function_names(ast)):
            raise _malformed("trace() is not available in a patch path", f"{op.where}.part.path")
        if len(_PATH_CACHE) < 1000:
            _PATH_CACHE[path] = run
    try:
        return run(marked, {})
    except Exception as exc:  # noqa: BLE001 - fhirpathpy raises plain errors for type mismatches
        raise _unfit(op, f"the path cannot be evaluated ({type(exc).__name__})") from exc


def _unfit(op: _Operation, message: str) -> FhirError:
    return FhirError(f"FHIRPath Patch operation {op.n} ({op.type} at {op.path[:100]!r}): {message}",
                     status=422, code="processing", expression=[f"{op.where}.part.path"])


@dataclass(frozen=True, slots=True)
class _Slot:
    """Where a selected element sits: ``owner[key]``, or ``owner[key][index]``; ``ctype`` is the
    owner's type."""

    owner: dict[str, Any]
    key: str
    index: int | None
    ctype: ComplexType | None


def _select(op: _Operation, document: dict[str, Any], checker: StrictChecker) -> tuple[list[Any], list[_Slot | None]]:
    """What ``op.path`` selects, and where each sits (None: the resource itself)."""
    marked, nodes = _marked(document, checker)
    # fhirpathpy gives a primitive's ``_x`` object (its id and extensions) beside its value: one
    # element, which the value stands for.
    found = [item for item in _evaluate(op, marked, op.path) if not _extension_object(item, nodes)]
    slots: list[_Slot | None] = []
    values: list[Any] = []
    for item in found:
        mark = _mark_of(item)
        if mark is not None:
            node = nodes[mark]
            owner = node.owner
            slots.append(None if owner is None else _Slot(owner, node.key, node.index, node.owner_ctype))
            values.append(node.obj)
        elif type(item) in (_Str, _Int, _Float):
            slot = item.slot
            slots.append(slot)
            held = slot.owner[slot.key]
            values.append(held if slot.index is None else held[slot.index])
        else:
            break
    else:
        return values, slots
    # A boolean (or a value no element holds): found again through the path's last step.
    step = _LAST_STEP.match(op.path)
    if step is None:
        raise _unfit(op, "the path selects values that are not elements of the resource")
    owners = _evaluate(op, marked, step["parent"])
    slots, values = [], []
    for owner in owners:
        mark = _mark_of(owner)
        if mark is None:
            raise _unfit(op, "the path selects values that are not elements of the resource")
        node = nodes[mark]
        key = _key_in(node.obj, node.ctype, step["member"])
        if key is None:
            continue
        held = node.obj[key]
        items = list(enumerate(held)) if isinstance(held, list) else [(None, held)]
        if step["index"] is not None:
            wanted = int(step["index"])
            items = [(i, v) for i, v in items if i == wanted] if isinstance(held, list) else (
                items if wanted == 0 else [])
        for i, v in items:
            slots.append(_Slot(node.obj, key, i, node.ctype))
            values.append(v)
    if len(values) != len(found):
        raise _unfit(op, "the path selects values that are not elements of the resource")
    return values, slots


def _mark_of(item: Any) -> int | None:
    """The number of a marked copy's object (its marker is its first key), else None."""
    if not isinstance(item, dict) or not item:
        return None
    first = next(iter(item))
    return int(first[len(_MARK):]) if first.startswith(_MARK) else None


def _extension_object(item: Any, nodes: list[_Node]) -> bool:
    mark = _mark_of(item)
    return mark is not None and nodes[mark].key.startswith("_")


def _key_in(obj: dict[str, Any], ctype: ComplexType | None, member: str) -> str | None:
    """The JSON key of element ``member`` in ``obj`` (a choice element by its typed name)."""
    if member in obj:
        return member
    if ctype is not None and member in ctype.choices:
        return next((key for key in obj if ctype.choice_of(key) == member), None)
    return None


# -- applying ---------------------------------------------------------------------------------


def _apply(document: dict[str, Any], op: _Operation, checker: StrictChecker) -> None:
    if op.type == "delete":
        _values, slots = _select(op, document, checker)
        if len(slots) > 1:
            raise _unfit(op, f"the path selects {len(slots)} elements; delete takes one")
        for slot in slots:
            if slot is None:
                raise _unfit(op, "the resource itself cannot be deleted by a patch")
            _remove(slot)
        return
    if op.type == "replace":
        slot = _one(op, *_select(op, document, checker))
        if slot is None:
            raise _unfit(op, "the resource itself cannot be replaced by a patch")
        key = slot.key
        if slot.ctype is not None and op.value[0] == "value":
            choice = slot.ctype.choice_of(key)
            if choice is not None:  # Observation.value: valueQuantity may become valueString
                key = choice + op.value[1]
        value = _built(op, checker, slot.ctype, key)
        if slot.index is None:
            if key != slot.key:
                del slot.owner[slot.key]
                slot.owner.pop(f"_{slot.key}", None)
            slot.owner[key] = value
        else:
            slot.owner[key][slot.index] = value
        return
    if op.type == "add":
        values, slots = _select(op, document, checker)
        _one(op, values, slots)
        target = values[0]
        if isinstance(target, dict):
            ctype = _type_of(document, slots[0], target, checker)
        elif slots[0] is not None and op.name in ("extension", "id"):
            target, ctype = _primitive_element(op, slots[0]), checker.element_type
        else:
            raise _unfit(op, "add needs the path to select an element that has elements of its own")
        assert op.name is not None
        key, repeats = _element(op, ctype, op.name)
        value = _built(op, checker, ctype, key)
        if repeats:
            target.setdefault(key, [])
            if not isinstance(target[key], list):
                raise _unfit(op, f"element {op.name!r} is not a list in the resource")
            target[key].append(value)
        elif key in target or (ctype is not None and _choice_taken(target, ctype, op.name)):
            raise _unfit(op, f"element {op.name!r} does not repeat and already has a value (use replace)")
        else:
            target[key] = value
        return
    # insert and move: the path names a list
    owner, key, items, ctype = _list_at(op, document, checker)
    if op.type == "insert":
        assert op.index is not None
        if op.index > len(items):
            raise _unfit(op, f"index {op.index} is past the end of the list ({len(items)} elements)")
        items.insert(op.index, _built(op, checker, ctype, key))
    else:
        assert op.source is not None and op.destination is not None
        if op.source >= len(items) or op.destination >= len(items):
            raise _unfit(op, f"source and destination must be below the list's length ({len(items)})")
        items.insert(op.destination, items.pop(op.source))
    if items:
        owner[key] = items
    # An insert into an absent list creates it; a list cannot become empty here.


def _one(op: _Operation, values: list[Any], slots: list[_Slot | None]) -> _Slot | None:
    if len(values) != 1:
        raise _unfit(op, f"the path selects {len(values)} elements; {op.type} takes exactly one")
    return slots[0]


def _remove(slot: _Slot) -> None:
    if slot.index is None:
        del slot.owner[slot.key]
        slot.owner.pop(f"_{slot.key}", None)
        return
    items = slot.owner[slot.key]
    del items[slot.index]
    extensions = slot.owner.get(f"_{slot.key}")
    if isinstance(extensions, list) and slot.index < len(extensions):
        del extensions[slot.index]
    if not items:
        del slot.owner[slot.key]
        slot.owner.pop(f"_{slot.key}", None)


def _primitive_element(op: _Operation, slot: _Slot) -> dict[str, Any]:
    """The ``_x`` object holding a primitive's id and extensions (made when absent; a repeating
    primitive's ``_x`` list is as long as its values, ``null`` where one has none)."""
    key = f"_{slot.key}"
    if slot.index is None:
        held = slot.owner.setdefault(key, {})
        if not isinstance(held, dict):
            raise _unfit(op, f"element {key!r} is not an object in the resource")
        return held
    values = slot.owner[slot.key]
    listed = slot.owner.setdefault(key, [])
    if not isinstance(listed, list):
        raise _unfit(op, f"element {key!r} is not a list in the resource")
    listed.extend([None] * (len(values) - len(listed)))
    if listed[slot.index] is None:
        listed[slot.index] = {}
    elif not isinstance(listed[slot.index], dict):
        raise _unfit(op, f"element {key!r} holds something other than an object")
    return listed[slot.index]  # type: ignore[no-any-return]


def _type_of(document: dict[str, Any], slot: _Slot | None, target: dict[str, Any], checker: StrictChecker) -> (
        ComplexType | None):
    if slot is None:
        return _resource_type(checker, document)
    return _child_type(checker, slot.ctype, slot.key, target)


def _element(op: _Operation, ctype: ComplexType | None, name: str) -> tuple[str, bool]:
    """The JSON key element ``name`` takes for ``op``'s value, and whether it repeats."""
    if ctype is None:
        raise _unfit(op, "the element's type is not known")
    key = name
    if name in ctype.choices:
        if op.value[0] != "value":
            raise _unfit(op, f"choice element {name!r} needs a typed value")
        key = name + op.value[1]
    prop = ctype.props.get(key)
    if prop is None:
        raise _unfit(op, f"{ctype.name} has no element {key!r}")
    return key, bool(prop[2])


def _choice_taken(target: dict[str, Any], ctype: ComplexType, name: str) -> bool:
    return any(ctype.choice_of(k) == name for k in target)


def _list_at(
    op: _Operation, document: dict[str, Any], checker: StrictChecker
) -> tuple[dict[str, Any], str, list[Any], ComplexType | None]:
    """The list ``op.path`` names (``Patient.identifier``), absent lists as empty ones."""
    step = _LAST_STEP.match(op.path)
    if step is None or step["index"] is not None:
        raise _unfit(op, f"{op.type} needs the path of a list (an element that repeats)")
    marked, nodes = _marked(document, checker)
    owners = _evaluate(op, marked, step["parent"])
    mark = _mark_of(owners[0]) if len(owners) == 1 else None
    if mark is None:
        raise _unfit(op, f"the path selects {len(owners)} lists; {op.type} takes exactly one")
    node = nodes[mark]
    key = step["member"]
    prop = node.ctype.props.get(key) if node.ctype is not None else None
    if prop is None or not prop[2]:
        raise _unfit(op, f"{op.type} needs the path of a list, and {key!r} does not repeat here")
    held = node.obj.get(key, [])
    if not isinstance(held, list):
        raise _unfit(op, f"element {key!r} is not a list in the resource")
    return node.obj, key, held, node.ctype


def _built(op: _Operation, checker: StrictChecker, owner: ComplexType | None, key: str) -> Any:
    """The JSON of ``op``'s value for element ``key`` of ``owner``: a ``value[x]`` as it is, parts
    assembled into an object (repeating elements as lists) by the element's type."""
    kind, payload = op.value[0], op.value[1:]
    if kind == "value":
        return payload[1]
    prop = owner.props.get(key) if owner is not None else None
    if prop is None or prop[0] != KIND_COMPLEX:
        raise _unfit(op, f"parts can only build an element with elements of its own, not {key!r}")
    return _from_parts(op, checker, prop[1], payload[0], f"{op.where}.part.value")


def _from_parts(op: _Operation, checker: StrictChecker, ctype: ComplexType, parts: list[Any], where: str) -> (
        dict[str, Any]):
    out: dict[str, Any] = {}
    for m, part in enumerate(parts):
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str) or not name:
            raise _malformed("every part of a value needs a name", f"{where}.part[{m}].name")
        value = _value(part, f"{where}.part[{m}]")
        key = name + value[1] if value[0] == "value" and name in ctype.choices else name
        prop = ctype.props.get(key)
        if prop is None:
            raise _unfit(op, f"{ctype.name} has no element {key!r}")
        if value[0] == "value":
            built = value[2]
        elif prop[0] == KIND_COMPLEX:
            built = _from_parts(op, checker, prop[1], value[1], f"{where}.part[{m}]")
        else:
            raise _unfit(op, f"element {key!r} of {ctype.name} takes a value, not parts")
        if prop[2]:
            out.setdefault(key, []).append(built)
        elif key in out:
            raise _unfit(op, f"element {key!r} of {ctype.name} does not repeat")
        else:
            out[key] = built
    return out
