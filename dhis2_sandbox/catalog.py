"""The sandbox's metadata: the bundled demo set, indexed for the lookups validation needs.

The JSON in ``data/metadata.json`` has the shape of DHIS2 API objects (``fields=*``):
references between objects are ``{"id": UID}``. ``Catalog`` keeps each collection in order,
one id index over all of them (used to expand references in ``fields=`` filters) and the
derived look-ups the tracker and aggregate validators ask for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["COLLECTIONS", "Catalog", "load_catalog"]

JsonObject = dict[str, Any]

# Metadata collections served under /api/<name>; the order is the order of the JSON file.
COLLECTIONS = (
    "organisationUnits",
    "optionSets",
    "options",
    "trackedEntityAttributes",
    "trackedEntityTypes",
    "categoryOptions",
    "categories",
    "categoryCombos",
    "categoryOptionCombos",
    "dataElements",
    "programs",
    "programStages",
    "dataSets",
)


def _ids(refs: Any) -> list[str]:
    return [ref["id"] for ref in refs or () if isinstance(ref, Mapping) and "id" in ref]


@dataclass
class Catalog:
    """Indexed demo metadata; read-only once built."""

    collections: dict[str, list[JsonObject]]
    system: JsonObject
    by_id: dict[str, JsonObject] = field(init=False)
    kind_of: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {}
        self.kind_of = {}
        for name, objects in self.collections.items():
            for obj in objects:
                self.by_id[obj["id"]] = obj
                self.kind_of[obj["id"]] = name

    def get(self, collection: str, uid: str | None) -> JsonObject | None:
        """The object ``uid`` if it belongs to ``collection``."""
        if uid is None or self.kind_of.get(uid) != collection:
            return None
        return self.by_id[uid]

    def option_codes(self, option_set_uid: str) -> set[str]:
        """Codes of the options of an option set (values must be option codes)."""
        option_set = self.get("optionSets", option_set_uid)
        if option_set is None:
            return set()
        return {self.by_id[uid]["code"] for uid in _ids(option_set.get("options"))}

    def tet_attributes(self, tet_uid: str) -> dict[str, bool]:
        """Attribute UID → mandatory, for a tracked entity type."""
        tet = self.get("trackedEntityTypes", tet_uid) or {}
        return {
            item["trackedEntityAttribute"]["id"]: bool(item.get("mandatory"))
            for item in tet.get("trackedEntityTypeAttributes", [])
        }

    def program_attributes(self, program_uid: str) -> dict[str, bool]:
        """Attribute UID → mandatory, for a program."""
        program = self.get("programs", program_uid) or {}
        return {
            item["trackedEntityAttribute"]["id"]: bool(item.get("mandatory"))
            for item in program.get("programTrackedEntityAttributes", [])
        }

    def stage_elements(self, stage_uid: str) -> dict[str, bool]:
        """Data element UID → compulsory, for a program stage."""
        stage = self.get("programStages", stage_uid) or {}
        return {
            item["dataElement"]["id"]: bool(item.get("compulsory"))
            for item in stage.get("programStageDataElements", [])
        }

    def program_org_units(self, program_uid: str) -> set[str]:
        """Org units a program is assigned to."""
        return set(_ids((self.get("programs", program_uid) or {}).get("organisationUnits")))

    def program_stages(self, program_uid: str) -> set[str]:
        """Stage UIDs of a program."""
        return set(_ids((self.get("programs", program_uid) or {}).get("programStages")))

    def combo_options(self, category_combo_uid: str) -> set[str]:
        """Category option combo UIDs of a category combo."""
        combo = self.get("categoryCombos", category_combo_uid) or {}
        return set(_ids(combo.get("categoryOptionCombos")))

    @property
    def default_category_option_combo(self) -> str:
        """UID of the ``default`` category option combo (looked up, never hard-coded)."""
        for combo in self.collections["categoryCombos"]:
            if combo.get("isDefault"):
                return _ids(combo["categoryOptionCombos"])[0]
        raise LookupError("the metadata has no default category combo")

    def data_sets_of(self, data_element_uid: str) -> list[JsonObject]:
        """Data sets that contain a data element."""
        return [
            data_set
            for data_set in self.collections["dataSets"]
            if any(item["dataElement"]["id"] == data_element_uid for item in data_set["dataSetElements"])
        ]

    def data_set_org_units(self, data_set_uid: str) -> set[str]:
        """Org units a data set is assigned to."""
        return set(_ids((self.get("dataSets", data_set_uid) or {}).get("organisationUnits")))

    def org_unit_ancestors(self, org_unit_uid: str) -> list[str]:
        """UIDs on the org unit's path, root first, itself last."""
        unit = self.get("organisationUnits", org_unit_uid)
        if unit is None:
            return []
        return [part for part in unit["path"].split("/") if part]


def load_catalog(path: Path | None = None) -> Catalog:
    """Load metadata from ``path`` or the bundled demo set."""
    if path is None:
        text = resources.files("dhis2_sandbox").joinpath("data/metadata.json").read_text("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    raw = json.loads(text)
    collections = {name: list(raw.get(name, [])) for name in COLLECTIONS}
    return Catalog(collections=collections, system=dict(raw.get("system", {})))
