"""What the store contract suites share: a search parser and resource builders."""

from __future__ import annotations

from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.store import ResourceStore

PARSER = QueryParser(default_registry(), 20, 1000)


def patient(family: str = "Smith", **extra: object) -> dict[str, object]:
    """A Patient with one family name, plus ``extra`` fields."""
    return {"resourceType": "Patient", "name": [{"family": family}], **extra}


def search_ids(store: ResourceStore, rtype: str, *items: tuple[str, str]) -> list[str]:
    """Ids of the resources a search with these parameters matches."""
    return [r.id for r in store.search(PARSER.parse(rtype, list(items))).resources]
