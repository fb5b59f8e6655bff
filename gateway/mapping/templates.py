"""Compiling JSON templates with ``{{ expression }}`` placeholders into builder functions.

Rules for building a value from a template (documented for integrators in
``mappings/README.md``):

* ``"{{ expr }}"`` (the whole string) keeps the value's type: nothing → the element is
  left out, one item → that item, several → a JSON array;
* text around placeholders (``"Visit of {{ form.meta.username }}"``) makes a string;
  if any placeholder yields nothing the element is left out (use ``| default('')``);
* inside a list, a placeholder yielding several items adds them all (``given:
  ["{{ name | split }}"]``);
* blank strings count as nothing, so FHIR never sees ``""``;
* an object or list that contains placeholders but got no value from any of them is
  left out, even if it has constant members: ``{system: phone, value: "{{ phone }}"}``
  disappears when the phone number is blank;
* ``null`` leaves the element out.

Builders return ``MISSING`` for "leave out". Every container in the output is freshly
built, so callers may mutate what they get.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.mapping.converters import CompileContext
from gateway.mapping.errors import MappingError, quote
from gateway.mapping.expressions import CompileError, Expression, Scope, compile_expression
from gateway.mapping.yamlfile import NodePath

__all__ = ["MISSING", "Builder", "CompiledTemplate", "TemplateCompiler", "copy_json"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

Builder = Callable[[Any, dict[str, list[Any]]], Any]
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def copy_json(value: Any) -> Any:
    """A deep copy of JSON-like data (much faster than ``copy.deepcopy``)."""
    vtype = type(value)
    if vtype is dict:
        return {key: copy_json(item) if type(item) in (dict, list) else item for key, item in value.items()}
    if vtype is list:
        return [copy_json(item) if type(item) in (dict, list) else item for item in value]
    return value


def copier(value: Any) -> Callable[[], Any]:
    """A function returning fresh copies of a constant, specialised to its shape once."""
    vtype = type(value)
    if vtype is dict:
        nested = [(key, copier(item)) for key, item in value.items() if type(item) in (dict, list)]
        if not nested:
            return value.copy  # type: ignore[no-any-return]

        def fresh_dict() -> dict[str, Any]:
            out: dict[str, Any] = value.copy()  # keeps key order; nested values replaced below
            for key, part in nested:
                out[key] = part()
            return out

        return fresh_dict
    if vtype is list:
        if all(type(item) not in (dict, list) for item in value):
            return value.copy  # type: ignore[no-any-return]
        items = [copier(item) for item in value]
        return lambda: [item() for item in items]
    return lambda: value


def _same(value: Any) -> Any:
    return value


def _blank(value: Any) -> bool:
    return value is None or (type(value) is str and not value.strip())


@dataclass(slots=True)
class CompiledTemplate:
    """A builder and two facts about it.

    ``dynamic``: it must run per record (False: built once at load and copied).
    ``counts``: it reads the record, so whether it produced anything decides whether the
    object or list around it is kept (``%system`` and literals do not count).
    """

    build: Builder
    dynamic: bool
    counts: bool
    is_leaf_expression: bool = False


def _nothing(record: Any, env: dict[str, list[Any]]) -> Any:
    return MISSING


_EMPTY = CompiledTemplate(_nothing, False, False)


_Member = tuple[Any, Builder, bool, bool]


def _object_builder(members: tuple[_Member, ...]) -> Builder:
    any_counting = any(counts for _, _, counts, _ in members)

    def build(record: Any, env: dict[str, list[Any]]) -> Any:
        out: dict[str, Any] = {}
        produced = False
        for key, member, counts, _ in members:
            item = member(record, env)
            if item is not MISSING:
                out[key] = item
                if counts:
                    produced = True
        if not out or (any_counting and not produced):
            return MISSING
        return out

    return build


def _list_builder(members: tuple[_Member, ...]) -> Builder:
    any_counting = any(counts for _, _, counts, _ in members)

    def build(record: Any, env: dict[str, list[Any]]) -> Any:
        out: list[Any] = []
        produced = False
        for _, member, counts, leaf in members:
            item = member(record, env)
            if item is MISSING:
                continue
            if leaf and type(item) is list:
                out.extend(item)
            else:
                out.append(item)
            if counts:
                produced = True
        if not out or (any_counting and not produced):
            return MISSING
        return out

    return build


class TemplateCompiler:
    """Compiles templates, collecting ``(path, message)`` issues instead of stopping."""

    def __init__(self, ctx: CompileContext, *, interpret: bool = False) -> None:
        self.ctx = ctx
        self.interpret = interpret
        self.issues: list[tuple[NodePath, str]] = []
        self.expressions: list[tuple[NodePath, Expression]] = []

    def expression(self, text: Any, path: NodePath, scope: Scope) -> Expression | None:
        """Compile a bare expression (``when``, ``id``, …); None after recording an issue."""
        try:
            compiled = compile_expression(text, self.ctx, scope, interpret=self.interpret)
        except CompileError as exc:
            self.issues.append((path, str(exc)))
            return None
        self.expressions.append((path, compiled))
        return compiled

    def template(self, value: Any, path: NodePath, scope: Scope) -> CompiledTemplate:
        """Compile any template value."""
        if isinstance(value, dict):
            return self._container(list(value.items()), path, scope, is_object=True)
        if isinstance(value, list):
            return self._container(list(enumerate(value)), path, scope, is_object=False)
        if isinstance(value, str) and "{{" in value:
            return self._string(value, path, scope)
        if value is None or (isinstance(value, str) and not value.strip()):
            return _EMPTY
        constant = value
        return CompiledTemplate(lambda record, env: constant, False, False)

    def _container(
        self, items: list[tuple[Any, Any]], path: NodePath, scope: Scope, *, is_object: bool
    ) -> CompiledTemplate:
        parts = [(key, self.template(item, (*path, key), scope)) for key, item in items]
        counts = any(part.counts for _, part in parts)
        if not any(part.dynamic for _, part in parts):
            built = self._assemble(parts, None, {}, is_object)
            if built is MISSING:
                return _EMPTY
            fresh = copier(built)
            return CompiledTemplate(lambda record, env: fresh(), False, counts)

        members = tuple((key, part.build, part.counts, part.is_leaf_expression) for key, part in parts)
        builder = _object_builder(members) if is_object else _list_builder(members)
        return CompiledTemplate(builder, True, counts)

    @staticmethod
    def _assemble(
        parts: list[tuple[Any, CompiledTemplate]], record: Any, env: dict[str, list[Any]], is_object: bool
    ) -> Any:
        members = tuple((key, part.build, part.counts, part.is_leaf_expression) for key, part in parts)
        builder = _object_builder(members) if is_object else _list_builder(members)
        return builder(record, env)

    def _string(self, value: str, path: NodePath, scope: Scope) -> CompiledTemplate:
        pieces: list[str | Expression] = []
        position = 0
        for match in _PLACEHOLDER.finditer(value):
            if match.start() > position:
                pieces.append(value[position : match.start()])
            compiled = self.expression(match.group(1).strip(), path, scope)
            if compiled is None:
                return _EMPTY
            pieces.append(compiled)
            position = match.end()
        if position < len(value):
            pieces.append(value[position:])
        if "{{" in "".join(piece for piece in pieces if isinstance(piece, str)):
            self.issues.append((path, "unclosed '{{' placeholder"))
            return _EMPTY
        if len(pieces) == 1 and isinstance(pieces[0], Expression):
            return self._leaf(pieces[0])
        interpolation = self._interpolation(pieces)
        if all(isinstance(piece, str) or piece.constant is not None for piece in pieces):
            try:
                text = interpolation.build(None, {})
            except MappingError as exc:
                self.issues.append((path, exc.message))
                return _EMPTY
            return CompiledTemplate(lambda record, env: text, False, False)
        return interpolation

    @staticmethod
    def _leaf(expression: Expression) -> CompiledTemplate:
        run = expression.run
        copy: Callable[[Any], Any] = _same if expression.fresh else copy_json

        def build(record: Any, env: dict[str, list[Any]]) -> Any:
            values = run(record, env)
            if len(values) == 1:
                value = values[0]
                vtype = type(value)
                if vtype is str:
                    return value if value and not value.isspace() else MISSING
                if vtype is dict or vtype is list:
                    return copy(value)
                return MISSING if value is None else value
            values = [copy(value) for value in values if not _blank(value)]
            if not values:
                return MISSING
            return values[0] if len(values) == 1 else values

        if expression.constant is not None:
            folded = build(None, {})
            if folded is MISSING:
                return CompiledTemplate(_nothing, False, False, True)
            fresh = copier(folded)
            return CompiledTemplate(lambda record, env: fresh(), False, False, True)
        return CompiledTemplate(build, True, not expression.static, True)

    @staticmethod
    def _interpolation(pieces: list[str | Expression]) -> CompiledTemplate:
        parts: list[tuple[str | None, Expression | None]] = [
            (piece, None) if isinstance(piece, str) else (None, piece) for piece in pieces
        ]
        counts = any(isinstance(piece, Expression) and not piece.static for piece in pieces)

        def build(record: Any, env: dict[str, list[Any]]) -> Any:
            text: list[str] = []
            for literal, expression in parts:
                if expression is None:
                    text.append(literal or "")
                    continue
                values = [value for value in expression.run(record, env) if not _blank(value)]
                if not values:
                    return MISSING
                if len(values) > 1 or type(values[0]) in (dict, list):
                    raise MappingError(
                        expression.text,
                        f"gives {quote(values)}; text templates need one value (use | join or | first)",
                    )
                value = values[0]
                if type(value) is bool:
                    text.append("true" if value else "false")
                elif isinstance(value, float) and value.is_integer():
                    text.append(str(int(value)))
                else:
                    text.append(str(value))
            return "".join(text)

        return CompiledTemplate(build, True, counts)
