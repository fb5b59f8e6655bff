"""The DHIS2 metadata cache: what the connector and mapping checks need to know about DHIS2.

``pull_metadata`` fetches each collection page by page with a ``fields=`` filter (only the
properties used: value types, option codes, stage membership, assignments), and
``MetadataSnapshot`` indexes them. Snapshots are stored as one JSON file (written to a
temporary file, then renamed, so a crash never leaves half a cache) and refreshed on
demand (``gateway dhis2 metadata pull``) or when older than a maximum age.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from gateway import jsonio
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.errors import Dhis2ProtocolError

__all__ = ["FIELDS", "MetadataCache", "MetadataSnapshot", "Progress", "pull_metadata"]

JsonObject = dict[str, Any]
Progress = Callable[[str, int, int], None]  # (collection, page, page_count)

FIELDS: dict[str, str] = {
    "organisationUnits": (
        "id,code,name,shortName,level,path,parent[id],openingDate,closedDate,geometry,lastUpdated"
    ),
    "trackedEntityTypes": "id,code,name,trackedEntityTypeAttributes[mandatory,trackedEntityAttribute[id]]",
    "trackedEntityAttributes": (
        "id,code,name,valueType,unique,orgunitScope,generated,optionSet[id],confidential"
    ),
    "programs": (
        "id,code,name,programType,trackedEntityType[id],categoryCombo[id],onlyEnrollOnce,displayIncidentDate,"
        "selectEnrollmentDatesInFuture,selectIncidentDatesInFuture,organisationUnits[id],"
        "programTrackedEntityAttributes[mandatory,trackedEntityAttribute[id]],programStages[id]"
    ),
    "programStages": (
        "id,code,name,program[id],repeatable,validationStrategy,programStageDataElements[compulsory,dataElement[id]]"
    ),
    "dataElements": (
        "id,code,name,valueType,domainType,aggregationType,zeroIsSignificant,categoryCombo[id],optionSet[id]"
    ),
    "optionSets": "id,code,name,valueType,options[id,code,name]",
    "categoryCombos": "id,code,name,isDefault,categoryOptionCombos[id]",
    "categoryOptionCombos": "id,code,name,categoryCombo[id],categoryOptions[id]",
    "dataSets": (
        "id,code,name,periodType,openFuturePeriods,expiryDays,categoryCombo[id],"
        "dataSetElements[dataElement[id]],organisationUnits[id]"
    ),
}


def _ids(refs: Any) -> list[str]:
    return [str(ref["id"]) for ref in refs or () if isinstance(ref, dict) and "id" in ref]


@dataclass
class MetadataSnapshot:
    """DHIS2 metadata as fetched at one moment, indexed for look-ups."""

    base_url: str
    version: str
    fetched_at: datetime
    collections: dict[str, list[JsonObject]]
    _by_id: dict[str, dict[str, JsonObject]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {name: {obj["id"]: obj for obj in objs} for name, objs in self.collections.items()}

    def get(self, collection: str, uid: str | None) -> JsonObject | None:
        """One object by UID."""
        return None if uid is None else self._by_id.get(collection, {}).get(uid)

    def by_code(self, collection: str, code: str) -> JsonObject | None:
        """One object by its ``code``."""
        return next((obj for obj in self.collections.get(collection, []) if obj.get("code") == code), None)

    def option_codes(self, option_set: str) -> set[str]:
        """Option codes of an option set (DHIS2 values must be codes)."""
        found = self.get("optionSets", option_set) or {}
        return {
            str(opt["code"]) for opt in found.get("options", []) if isinstance(opt, dict) and "code" in opt
        }

    def stage_elements(self, stage: str) -> dict[str, bool]:
        """Data element UID → compulsory, for a program stage."""
        found = self.get("programStages", stage) or {}
        return {
            item["dataElement"]["id"]: bool(item.get("compulsory"))
            for item in found.get("programStageDataElements", [])
        }

    def program_attributes(self, program: str) -> dict[str, bool]:
        """Attribute UID → mandatory, for a program."""
        found = self.get("programs", program) or {}
        return {
            item["trackedEntityAttribute"]["id"]: bool(item.get("mandatory"))
            for item in found.get("programTrackedEntityAttributes", [])
        }

    def tet_attributes(self, tracked_entity_type: str) -> dict[str, bool]:
        """Attribute UID → mandatory, for a tracked entity type."""
        found = self.get("trackedEntityTypes", tracked_entity_type) or {}
        return {
            item["trackedEntityAttribute"]["id"]: bool(item.get("mandatory"))
            for item in found.get("trackedEntityTypeAttributes", [])
        }

    def program_org_units(self, program: str) -> set[str]:
        """Org units a program is assigned to."""
        return set(_ids((self.get("programs", program) or {}).get("organisationUnits")))

    def data_set_elements(self, data_set: str) -> set[str]:
        """Data elements of a data set."""
        found = self.get("dataSets", data_set) or {}
        return {item["dataElement"]["id"] for item in found.get("dataSetElements", [])}

    def category_option_combos(self, data_element: str) -> set[str]:
        """Category option combos valid for a data element (of its category combo)."""
        element = self.get("dataElements", data_element) or {}
        combo = self.get("categoryCombos", (element.get("categoryCombo") or {}).get("id"))
        return set(_ids((combo or {}).get("categoryOptionCombos")))

    def default_category_option_combo(self) -> str | None:
        """The ``default`` category option combo (looked up, never hard-coded)."""
        for combo in self.collections.get("categoryCombos", []):
            if combo.get("isDefault") or combo.get("name") == "default":
                ids = _ids(combo.get("categoryOptionCombos"))
                return ids[0] if ids else None
        return None

    def value_type(self, collection: str, uid: str) -> str | None:
        """Value type of a data element or tracked entity attribute."""
        found = self.get(collection, uid)
        return None if found is None else found.get("valueType")

    def option_set_of(self, collection: str, uid: str) -> str | None:
        """Option set of a data element or attribute, if it has one."""
        found = self.get(collection, uid) or {}
        return (found.get("optionSet") or {}).get("id")

    # -- storage

    def to_json(self) -> bytes:
        """Serialise (stable key order, so unchanged metadata gives an unchanged file)."""
        data = {
            "baseUrl": self.base_url,
            "version": self.version,
            "fetchedAt": self.fetched_at.isoformat(),
            "collections": self.collections,
        }
        return jsonio.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, raw: bytes) -> MetadataSnapshot:
        """Parse a stored snapshot."""
        try:
            data = jsonio.loads(raw)
            return cls(
                base_url=str(data["baseUrl"]),
                version=str(data["version"]),
                fetched_at=datetime.fromisoformat(data["fetchedAt"]),
                collections={name: list(objs) for name, objs in data["collections"].items()},
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise Dhis2ProtocolError(f"not a stored DHIS2 metadata snapshot: {type(exc).__name__}") from exc

    def save(self, path: Path) -> None:
        """Write atomically (temporary file, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(self.to_json())
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> MetadataSnapshot:
        """Read a stored snapshot."""
        return cls.from_json(path.read_bytes())


async def pull_metadata(
    client: Dhis2Client, *, page_size: int = 200, progress: Progress | None = None
) -> MetadataSnapshot:
    """Fetch every collection the connector uses, page by page."""
    info = await client.system_info()
    collections: dict[str, list[JsonObject]] = {}
    for name, fields in FIELDS.items():
        objects: list[JsonObject] = []
        async for page_objects, page, page_count in client.pages(name, fields=fields, page_size=page_size):
            objects.extend(page_objects)
            if progress is not None:
                progress(name, page, page_count)
        collections[name] = objects
    return MetadataSnapshot(client.base_url, info.version_text, datetime.now(UTC), collections)


class MetadataCache:
    """A stored snapshot, refreshed on demand or when older than ``max_age``."""

    def __init__(self, path: Path, *, max_age: timedelta = timedelta(hours=24)) -> None:
        self.path = path
        self.max_age = max_age
        self._snapshot: MetadataSnapshot | None = None
        self._lock = asyncio.Lock()

    @property
    def snapshot(self) -> MetadataSnapshot | None:
        """The current snapshot, loading the stored file on first use."""
        if self._snapshot is None and self.path.exists():
            self._snapshot = MetadataSnapshot.load(self.path)
        return self._snapshot

    def stale(self, now: datetime | None = None) -> bool:
        """True when there is no snapshot or it is older than ``max_age``."""
        snapshot = self.snapshot
        moment = now or datetime.now(UTC)
        return snapshot is None or moment - snapshot.fetched_at > self.max_age

    async def refresh(self, client: Dhis2Client, *, progress: Progress | None = None) -> MetadataSnapshot:
        """Fetch now and store."""
        async with self._lock:
            snapshot = await pull_metadata(client, progress=progress)
            snapshot.save(self.path)
            self._snapshot = snapshot
            return snapshot

    async def refresh_if_stale(self, client: Dhis2Client) -> MetadataSnapshot:
        """Fetch only when the stored snapshot is missing or too old (for a periodic task)."""
        if self.stale():
            return await self.refresh(client)
        snapshot = self.snapshot
        assert snapshot is not None
        return snapshot
