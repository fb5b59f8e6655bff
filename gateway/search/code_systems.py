"""The code systems a token parameter on a ``code`` element implies.

A ``code`` element (``Patient.gender``, ``Observation.status``) carries no system and is indexed
without one, yet search.html lets a client name the system all the same
(``Patient?gender=http://hl7.org/fhir/administrative-gender|male``): for a ``code`` the system is
the one its required binding's value set draws from. The bundled bindings
(``gateway/r4/data/r4-bindings.json``, ``codeSystems``) name them, so such a value is searched as
the code with no system (``|male``, how the rows are stored); any other system still matches nothing.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from gateway.r4 import load_table
from gateway.search.registry import SearchParam

__all__ = ["implied_systems"]


@cache
def _bindings() -> dict[str, Any]:
    return load_table("r4-bindings.json")


@cache
def _systems(rtype: str, texts: tuple[str, ...]) -> frozenset[str]:
    bindings = _bindings()
    bound = bindings["elements"].get(rtype, {})
    systems: set[str] = set()
    for text in texts:
        element = text.removeprefix(f"{rtype}.") if text.startswith(f"{rtype}.") else None
        value_set = bound.get(element) if element else None
        if value_set is None:
            return frozenset()  # a part that is no bound code: its rows may carry any system
        systems.update(bindings["codeSystems"].get(value_set, ()))
    return frozenset(systems)


def implied_systems(rtype: str, param: SearchParam) -> frozenset[str]:
    """The systems a ``system|code`` value of ``param`` on ``rtype`` may name when every part of its
    path is a ``code`` element with a required binding (empty otherwise)."""
    if param.type != "token" or param.path is None or not param.path.texts:
        return frozenset()
    return _systems(rtype, param.path.texts)
