"""The sandbox's ``POST /api/dataValueSets``: validate each value, store, summarise.

Order of checks follows dhis2-core ``DataValueSetImportValidator``: data-set level checks
(unknown data set, org unit or attribute option combo in the header) abort the import with
status ERROR; value-level checks reject just that value (status WARNING, its index in
``rejectedIndexes``). Conflicts are grouped per error code and object with all affected
indexes (2.39+ format); earlier versions get the ``{object, value}`` format.

Re-posting the same values is idempotent: unchanged values count as ``ignored``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from dhis2_sandbox.catalog import Catalog
from dhis2_sandbox.periods import InvalidPeriod, period_containing, read_period
from dhis2_sandbox.storage import DataValueKey, SandboxStore
from dhis2_sandbox.valuetypes import normalise_boolean, value_problem

__all__ = ["AggregateParams", "AggregateResult", "run_data_value_import"]

JsonObject = dict[str, Any]
Version = tuple[int, int]

_MESSAGES = {
    "E7600": "Data set not found or not accessible: `{0}`",
    "E7602": "A valid dataset is required",
    "E7603": "Org unit not found or not accessible: `{0}`",
    "E7604": "Attribute option combo not found or not accessible: `{0}`",
    "E7610": "Data element not found or not accessible: `{0}`",
    "E7611": "Period not valid: `{0}`",
    "E7612": "Organisation unit not found or not accessible: `{0}`",
    "E7613": "Category option combo not found or not accessible for writing data: `{0}`",
    "E7615": "Attribute option combo not found or not accessible for writing data: `{0}`",
    "E7617": "Organisation unit: `{0}` not in hierarchy of current user: `{1}`",
    "E7618": "Data value or comment not specified for data element: `{0}`",
    "E7619": "Value must match data element's `{0}` type constraints: {1}",
    "E7620": "Invalid comment: {0}",
    "E7621": "Data value is not a valid option of the data element option set: `{0}`",
    "E7632": "Period type of period: `{0}` not valid for data element: `{1}`",
    "E7633": "Data element: `{0}` is not part of dataset: `{1}`",
    "E7634": "Category option combo: `{0}` must be part of category combo of data element: `{1}`",
    "E7635": "Attribute option combo: `{0}` must be part of category combo of data sets "
    "of data element: `{1}`",
    "E7636": "Data element: `{1}` must be assigned through data sets to organisation unit: `{0}`",
    "E7640": "Current date is past expiry days for period: `{0}`  and data set: `{1}`",
    "E7641": "Period: `{0}` is after latest open future period: `{2}` for data element: `{1}`",
}

_BOOL = ("true", "false")


@dataclass(frozen=True, slots=True)
class AggregateParams:
    """Query parameters of ``POST /api/dataValueSets`` the sandbox honours."""

    dry_run: bool = False
    import_strategy: str = "CREATE_AND_UPDATE"
    run_async: bool = False
    strict_periods: bool = False
    strict_data_elements: bool = False
    strict_organisation_units: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> AggregateParams:
        """Read the query string (unknown values of enums raise ``ValueError``)."""
        strategy = query.get("importStrategy", "CREATE_AND_UPDATE").upper()
        if strategy not in ("CREATE", "UPDATE", "CREATE_AND_UPDATE", "DELETE"):
            raise ValueError(f"Value {strategy} is not valid for parameter importStrategy")
        for name in ("idScheme", "dataElementIdScheme", "orgUnitIdScheme", "categoryOptionComboIdScheme"):
            if query.get(name, "uid").lower() != "uid":
                raise ValueError(f"The DHIS2 sandbox supports only {name}=UID")

        def flag(name: str) -> bool:
            return query.get(name, "false").lower() == "true"

        return cls(
            dry_run=flag("dryRun"),
            import_strategy=strategy,
            run_async=flag("async"),
            strict_periods=flag("strictPeriods"),
            strict_data_elements=flag("strictDataElements"),
            strict_organisation_units=flag("strictOrganisationUnits"),
        )

    def options_json(self) -> JsonObject:
        """``importOptions`` as DHIS2 echoes them."""
        return {
            "idSchemes": {},
            "dryRun": self.dry_run,
            "async": self.run_async,
            "importStrategy": self.import_strategy,
            "mergeMode": "REPLACE",
            "reportMode": "FULL",
            "skipExistingCheck": False,
            "sharing": False,
            "skipNotifications": False,
            "skipAudit": False,
            "datasetAllowsPeriods": False,
            "strictPeriods": self.strict_periods,
            "strictDataElements": self.strict_data_elements,
            "strictCategoryOptionCombos": False,
            "strictAttributeOptionCombos": False,
            "strictOrganisationUnits": self.strict_organisation_units,
            "requireCategoryOptionCombo": False,
            "requireAttributeOptionCombo": False,
            "skipPatternValidation": False,
            "ignoreEmptyCollection": False,
            "force": False,
            "firstRowIsHeader": True,
            "skipLastUpdated": False,
            "mergeDataValues": False,
            "skipCache": False,
        }


@dataclass
class _Conflicts:
    version: Version
    items: dict[tuple[str, str], JsonObject] = field(default_factory=dict)

    def add(self, code: str, obj: str, args: tuple[str, ...], prop: str, index: int | None) -> None:
        message = _MESSAGES[code]
        for position, arg in enumerate(args):
            message = message.replace("{" + str(position) + "}", arg)
        entry = self.items.get((code, message))
        if entry is None:
            objects = {"organisationUnit" if prop == "orgUnit" else prop: obj}
            entry = {"object": obj, "objects": objects, "value": message, "errorCode": code, "property": prop}
            entry["indexes"] = []
            self.items[(code, message)] = entry
        if index is not None:
            entry["indexes"].append(index)

    def as_json(self) -> list[JsonObject]:
        if self.version >= (2, 39):
            return list(self.items.values())
        return [{"object": item["object"], "value": item["value"]} for item in self.items.values()]


@dataclass(frozen=True, slots=True)
class AggregateResult:
    """The ImportSummary and the status that decides the HTTP code."""

    summary: JsonObject
    status: str  # SUCCESS | WARNING | ERROR


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class _Importer:
    catalog: Catalog
    store: SandboxStore
    params: AggregateParams
    username: str
    capture_roots: frozenset[str] | None
    today: date
    conflicts: _Conflicts
    counts: dict[str, int] = field(
        default_factory=lambda: {"imported": 0, "updated": 0, "ignored": 0, "deleted": 0}
    )
    rejected: list[int] = field(default_factory=list)

    def header_errors(self, body: JsonObject) -> bool:
        data_set = _text(body.get("dataSet"))
        if data_set and self.catalog.get("dataSets", data_set) is None:
            self.conflicts.add("E7600", data_set, (data_set,), "dataSet", None)
        if self.params.strict_data_elements and not data_set:
            self.conflicts.add("E7602", "DATA_IMPORT_STRICT_DATA_ELEMENTS", (), "dataSet", None)
        org_unit = _text(body.get("orgUnit"))
        if org_unit and self.catalog.get("organisationUnits", org_unit) is None:
            self.conflicts.add("E7603", org_unit, (org_unit,), "orgUnit", None)
        aoc = _text(body.get("attributeOptionCombo"))
        if aoc and self.catalog.get("categoryOptionCombos", aoc) is None:
            self.conflicts.add("E7604", aoc, (aoc,), "attributeOptionCombo", None)
        return bool(self.conflicts.items)

    def check(
        self, value: JsonObject, index: int, data_set: str | None
    ) -> tuple[DataValueKey, str | None] | None:
        """The value's key and normalised value, or None after recording its conflict."""
        add = self.conflicts.add
        element_uid = _text(value.get("dataElement")) or ""
        element = self.catalog.get("dataElements", element_uid)
        if element is None:
            add("E7610", element_uid, (element_uid,), "dataElement", index)
            return None
        period_text = _text(value.get("period")) or ""
        try:
            period = read_period(period_text)
        except InvalidPeriod:
            add("E7611", period_text, (period_text,), "period", index)
            return None
        org_unit = _text(value.get("orgUnit")) or ""
        if self.catalog.get("organisationUnits", org_unit) is None:
            add("E7612", org_unit, (org_unit,), "orgUnit", index)
            return None
        default = self.catalog.default_category_option_combo
        coc = _text(value.get("categoryOptionCombo")) or default
        if self.catalog.get("categoryOptionCombos", coc) is None:
            add("E7613", coc, (coc,), "categoryOptionCombo", index)
            return None
        aoc = _text(value.get("attributeOptionCombo")) or default
        if self.catalog.get("categoryOptionCombos", aoc) is None:
            add("E7615", aoc, (aoc,), "attributeOptionCombo", index)
            return None
        if self.capture_roots is not None and not self.capture_roots.intersection(
            self.catalog.org_unit_ancestors(org_unit)
        ):
            add("E7617", org_unit, (org_unit, self.username), "orgUnit", index)
            return None
        text = _text(value.get("value"))
        comment = _text(value.get("comment"))
        deleting = self.params.import_strategy == "DELETE"
        if (text is None or text == "") and not comment and not deleting:
            add("E7618", "Value", (element_uid,), "value", index)
            return None
        key = DataValueKey(element_uid, period.iso, org_unit, coc, aoc)
        if text and not deleting:
            text = normalise_boolean(text, element["valueType"])
            if not self._value_ok(element, text, index):
                return None
        if comment is not None and len(comment) > 50_000:
            add("E7620", comment[:40], ("comment_length_greater_than_max_length",), "comment", index)
            return None
        if coc not in self.catalog.combo_options(element["categoryCombo"]["id"]):
            add("E7634", coc, (coc, element_uid), "categoryOptionCombo", index)
            return None
        if not self._data_set_rules(element, period_text, key, index, data_set):
            return None
        return key, text

    def _value_ok(self, element: JsonObject, text: str, index: int) -> bool:
        option_set = (element.get("optionSet") or {}).get("id")
        if option_set is not None:
            if text not in self.catalog.option_codes(option_set):
                self.conflicts.add("E7621", text, (element["id"],), "value", index)
                return False
            return True
        problem = value_problem(text, element["valueType"])
        if problem is not None:
            self.conflicts.add("E7619", text, (element["valueType"], problem), "value", index)
            return False
        return True

    def _data_set_rules(
        self, element: JsonObject, period_text: str, key: DataValueKey, index: int, data_set: str | None
    ) -> bool:
        add = self.conflicts.add
        data_sets = self.catalog.data_sets_of(element["id"])
        period = read_period(key.period)
        if data_sets and all(ds["periodType"] != period.period_type for ds in data_sets):
            add("E7632", period_text, (period_text, element["id"]), "period", index)
            return False
        if self.params.strict_data_elements and data_set and data_set not in {ds["id"] for ds in data_sets}:
            add("E7633", element["id"], (element["id"], data_set), "dataElement", index)
            return False
        aoc_ok = (
            any(
                key.attribute_option_combo in self.catalog.combo_options(ds["categoryCombo"]["id"])
                for ds in data_sets
            )
            or not data_sets
        )
        if not aoc_ok:
            add(
                "E7635",
                key.attribute_option_combo,
                (key.attribute_option_combo, element["id"]),
                "attributeOptionCombo",
                index,
            )
            return False
        if self.params.strict_organisation_units and not any(
            key.org_unit in self.catalog.data_set_org_units(ds["id"]) for ds in data_sets
        ):
            add("E7636", key.org_unit, (key.org_unit, element["id"]), "orgUnit", index)
            return False
        for ds in data_sets:
            latest = period_containing(ds["periodType"], self.today)
            for _ in range(int(ds.get("openFuturePeriods", 0))):
                latest = period_containing(ds["periodType"], latest.end + timedelta(days=1))
            if period.start > latest.end:
                add("E7641", key.period, (key.period, element["id"], latest.iso), "period", index)
                return False
            expiry = int(ds.get("expiryDays", 0))
            # dhis2-core DataSet.isLocked: (end date at midnight) + expiryDays is before now, so
            # the period locks as the day end + expiryDays begins.
            if expiry > 0 and self.today >= period.end + timedelta(days=expiry):
                add("E7640", key.period, (key.period, ds["id"]), "period", index)
                return False
        return True

    def apply(self, key: DataValueKey, text: str | None, value: JsonObject, index: int) -> None:
        element = self.catalog.by_id[key.data_element]
        existing = self.store.get_data_value(key)
        comment = _text(value.get("comment"))
        followup = bool(value.get("followup") or value.get("followUp"))
        strategy = self.params.import_strategy
        if strategy == "DELETE" or (not text and not comment and existing is not None):
            if existing is not None:
                if not self.params.dry_run:
                    self.store.delete_data_value(key)
                self.counts["deleted"] += 1
            else:
                self.counts["ignored"] += 1
            return
        numeric_zero = (
            text is not None and element["valueType"] not in ("TEXT", "LONG_TEXT") and _is_zero(text)
        )
        if numeric_zero and not element.get("zeroIsSignificant") and not comment:
            # Zeros of data elements where zero is not significant are not stored (no conflict);
            # one replacing a stored value deletes it (dhis2-core saveDataValueUpdate).
            if existing is None or strategy == "CREATE":
                self.counts["ignored"] += 1
                return
            if not self.params.dry_run:
                self.store.delete_data_value(key)
            self.counts["deleted"] += 1
            return
        if existing is None:
            if strategy == "UPDATE":
                self.counts["ignored"] += 1
                return
            self.counts["imported"] += 1
        else:
            unchanged = (existing["value"], existing["comment"], existing["followup"]) == (
                text,
                comment,
                followup,
            )
            if unchanged or strategy == "CREATE":
                self.counts["ignored"] += 1
                return
            self.counts["updated"] += 1
        if not self.params.dry_run:
            self.store.save_data_value(key, text, comment, followup, self.username)


def _is_zero(text: str) -> bool:
    try:
        return float(text) == 0.0
    except ValueError:
        return False


def run_data_value_import(
    body: Any,
    params: AggregateParams,
    catalog: Catalog,
    store: SandboxStore,
    *,
    username: str,
    capture_roots: frozenset[str] | None,
    version: Version,
    today: date,
) -> AggregateResult:
    """Import a data value set and build its ImportSummary."""
    if not isinstance(body, dict) or not isinstance(body.get("dataValues", []), list):
        raise ValueError("The request body must be a JSON data value set")
    conflicts = _Conflicts(version)
    importer = _Importer(catalog, store, params, username, capture_roots, today, conflicts)
    values: list[Any] = body.get("dataValues") or []
    header = {name: body.get(name) for name in ("period", "orgUnit", "attributeOptionCombo")}
    data_set = _text(body.get("dataSet"))
    complete: str | None = None
    if importer.header_errors(body):
        importer.counts["ignored"] = len(values)
        status = "ERROR"
    else:
        with store.transaction():
            for index, raw in enumerate(values):
                value = {
                    **{k: v for k, v in header.items() if v is not None},
                    **(raw if isinstance(raw, dict) else {}),
                }
                checked = importer.check(value, index, data_set)
                if checked is None:
                    importer.rejected.append(index)
                    importer.counts["ignored"] += 1
                    continue
                importer.apply(checked[0], checked[1], value, index)
            complete = _complete(body, catalog, store, params)
        status = "WARNING" if conflicts.items else "SUCCESS"
    summary: JsonObject = {
        "responseType": "ImportSummary",
        "status": status,
        "importOptions": params.options_json(),
        "description": "Import process completed successfully"
        if status != "ERROR"
        else "Import process was aborted",
        "importCount": importer.counts,
        "conflicts": conflicts.as_json(),
        "rejectedIndexes": importer.rejected,
        "dataSetComplete": complete or "false",
    }
    return AggregateResult(summary, status)


def _complete(body: JsonObject, catalog: Catalog, store: SandboxStore, params: AggregateParams) -> str | None:
    data_set, completed = _text(body.get("dataSet")), _text(body.get("completeDate"))
    period, org_unit = _text(body.get("period")), _text(body.get("orgUnit"))
    if not (data_set and completed and period and org_unit):
        return None
    aoc = _text(body.get("attributeOptionCombo")) or catalog.default_category_option_combo
    iso = read_period(period).iso if period else period
    if not params.dry_run:
        store.complete(data_set, iso, org_unit, aoc, completed[:10])
    return completed[:10]
