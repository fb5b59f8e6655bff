"""The ingest service: records in, FHIR resources stored, failures quarantined.

For every record of a request:

1. the source's mapping set turns it into a transaction Bundle (``MappingError`` if not);
2. every resource is validated and its write prepared (``prepare_transaction``), on the
   request's thread;
3. the service's writer thread (``gateway.ingest.writer``) stores the Bundle in one store
   transaction, PUT by deterministic id, skipping resources whose content did not change
   (so a duplicate delivery writes nothing, an edited record makes new versions);
4. a record that failed 1, 2 or 3 goes to the quarantine with its OperationOutcome, to be
   replayed once the mapping (or the sender) is fixed. Nothing received is lost.
5. a record whose mapping names its version (``modified``) and that is older than the version
   stored is not written: it is answered ``stale`` (``gateway.ingest.retractions``).

The records of one request (a JSON array, a CSV file) are committed up to ``BATCH_RECORDS``
per transaction, because the commit (an fsync) costs as much as writing a record, and the
writer commits batches that queue up together (group commit). Each record stays
all-or-nothing: a record whose Bundle does not validate is quarantined before its batch is
written, and when the database refuses a batch it is rolled back and its records are
written one by one, so only the refused record is quarantined. While the writer commits,
request threads prepare the next batches: on two cores the two overlap.

Failures of the database itself are not record failures: they propagate, the request
fails with a 5xx, and senders (CommCare, CHT) retry.

Logs carry source, counts, quarantine ids, issue codes and field paths; never values.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import orjson

from gateway import jsonio
from gateway.errors import CLIENT_ERRORS, FhirError, RequestError
from gateway.fhir import PreparedTransaction, combine_prepared, informational, prepare_transaction, run_prepared
from gateway.ingest.body import CSV, ReceivedRecord
from gateway.ingest.progress import keep_task_progress, stored_tasks
from gateway.ingest.registry import MappingRegistry
from gateway.ingest.results import IngestReport, RecordResult, WrittenResource
from gateway.ingest.retractions import OutputChange, StaleRecords, apply_output_changes
from gateway.ingest.writer import BATCH_RECORDS, GROUP_RECORDS, IngestWriter, PendingRecord, RecordGroup
from gateway.mapping import CompiledMapping, InputError, MappingError, MappingSet, parse_csv, stored_record_key
from gateway.metrics import metrics
from gateway.search import QueryParser
from gateway.store import MessageEntry, QuarantinedRecord, Store, StoredResource

__all__ = ["BATCH_RECORDS", "IngestReport", "IngestService", "RecordResult", "WrittenResource"]

log = logging.getLogger("gateway.ingest")

#: Where the service reports each record it handled (the message log writer's ``note``).
Journal = Callable[[Sequence[MessageEntry]], None]


class IngestService:
    """Maps, validates, stores and quarantines records of the configured sources.

    Usage::

        service = IngestService(store, parser, MappingRegistry(Path("mappings"), settings.sources))
        report = service.ingest("cht", split_body(body, content_type))
    """

    def __init__(
        self, store: Store, parser: QueryParser, registry: MappingRegistry, journal: Journal | None = None
    ) -> None:
        self.store = store
        self.parser = parser
        self.registry = registry
        self.journal = journal
        #: Called after a request's writes committed (the identity matcher's ``catch_up``), outside
        #: the write transaction; its failure is logged, never the request's.
        self.after_commit: Callable[[], object] | None = None
        #: Records the writer commits in one transaction at most (a backfill takes fewer: a live
        #: write of another process waits for one of its transactions on SQLite).
        self.group_records = GROUP_RECORDS
        self._writer: IngestWriter | None = None
        self._writer_lock = threading.Lock()
        # Sources whose lists kept under their name (before lists were kept per system) this
        # process has moved: once each, so the hot path reads only the system's lists.
        self._moved_sources: set[str] = set()

    def close(self) -> None:
        """Stop the writer thread (after the writes it has)."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def ingest(self, source_name: str, records: list[ReceivedRecord], base: str = "") -> IngestReport:
        """Handle every record of one request; see the module docstring."""
        source, mapping_set = self.registry.resolve(source_name)
        results: list[RecordResult | None] = [None] * len(records)
        meter = metrics()
        writes = self._writer_thread().request()
        try:
            batch = RecordGroup()
            for start in range(0, len(records), BATCH_RECORDS):
                # Mapped a batch at a time, so the Tasks they map are read from the store at once.
                mapped: list[
                    tuple[int, str | None, dict[str, Any] | None, OutputChange | Exception, CompiledMapping | None]
                ] = []
                for position in range(start, min(start + BATCH_RECORDS, len(records))):
                    if records[position].problem is not None:  # bytes that are no record: kept as they came
                        problem = FhirError(str(records[position].problem), status=400, code="structure")
                        mapped.append((position, None, None, problem, None))
                        continue
                    record_data = records[position].record
                    mapping = mapping_set.selected(record_data)  # once: key and Bundle share it
                    key = mapping_set.record_key(record_data, mapping)  # a record no mapping accepts: its id too
                    started = time.perf_counter()
                    try:
                        bundle, change = _mapped(mapping_set, source.name, record_data, key, mapping)
                    except CLIENT_ERRORS as exc:
                        mapped.append((position, key, None, exc, mapping))
                        continue
                    meter.mapping_seconds.labels(source.name).observe(time.perf_counter() - started)
                    mapped.append((position, change.record_key, bundle, change, mapping))
                tasks = stored_tasks(self.store, [made["entry"] for _, _, made, _, _ in mapped if made is not None])
                for position, key, made, outcome, mapping in mapped:
                    received = records[position]
                    try:
                        if isinstance(outcome, Exception):
                            raise outcome
                        assert made is not None
                        started = time.perf_counter()
                        prepared = self._prepare_mapped(made, outcome, mapping, base, tasks)
                        meter.validation_seconds.labels(source.name).observe(time.perf_counter() - started)
                    except CLIENT_ERRORS as exc:
                        writes.run(partial(self._quarantine_into, results, position, source.name, received, key, exc))
                        continue
                    record = PendingRecord(position, received, key, made, prepared, source.name, results, outcome)
                    if len(batch.records) >= BATCH_RECORDS or not batch.takes(record):
                        writes.store(batch.records)
                        batch = RecordGroup()
                    batch.add(record)
            if batch.records:
                writes.store(batch.records)
        except BaseException:
            writes.abandon()
            raise
        writes.wait()
        self._after_commit()
        report = IngestReport(source.name, [result for result in results if result is not None])
        for result in report.results:
            meter.ingest_records.labels(source.name, result.status).inc()
        if self.journal is not None:
            at = time.time()
            self.journal([message_line(at, "received", source.name, result) for result in report.results])
        log.info("ingest source=%s records=%d quarantined=%d", source.name, len(records), report.quarantined)
        return report

    def _after_commit(self) -> None:
        if self.after_commit is None:
            return
        try:
            self.after_commit()
        except Exception as exc:  # the records are stored; matching catches up on the next write
            log.error("after-commit step failed (%s)", type(exc).__name__)

    def delete_record(self, source_name: str, record_key: str) -> RecordResult:
        """The source deleted record ``record_key``: take back everything it produced.

        For sources whose payloads cannot say so (a Kobo submission deleted, a CSV row
        withdrawn). Taking back an unknown record does nothing, so repeating it is safe.
        """
        source, mapping_set = self.registry.resolve(source_name)
        record_key = stored_record_key(record_key)  # as the record's ingest stored it
        change = OutputChange(source.name, mapping_set.system, record_key, [], deleted=True)
        prepared = self._prepare([], "")
        written: list[WrittenResource] = []
        writes = self._writer_thread().request()
        writes.run(lambda: written.extend(self._commit(prepared, [change])))
        writes.wait()
        self._after_commit()
        result = _stored(0, change, written)
        log.info("record deleted source=%s retracted=%d", source.name, len(result.resources))
        if self.journal is not None:
            self.journal([message_line(time.time(), "received", source.name, result)])
        return result

    def _writer_thread(self) -> IngestWriter:
        with self._writer_lock:
            if self._writer is None:
                self._writer = IngestWriter(self._store_group, group_records=self.group_records)
            return self._writer

    def _prepare_mapped(
        self,
        bundle: dict[str, Any],
        change: OutputChange,
        mapping: CompiledMapping | None,
        base: str,
        tasks: Mapping[str, StoredResource] | None = None,
    ) -> PreparedTransaction:
        """``_prepare`` of a mapped record's Bundle; a part FHIR refuses is named by the rule that made it."""
        merge = mapping.merged_outputs(change.outputs) if mapping is not None else set()
        try:
            return self._prepare(bundle["entry"], base, tasks, merge)
        except FhirError as exc:
            raise _in_rule(exc, bundle, change, mapping) from None

    def _prepare(
        self,
        entries: list[dict[str, Any]],
        base: str,
        tasks: Mapping[str, StoredResource] | None = None,
        merge: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
    ) -> PreparedTransaction:
        keep_task_progress(self.store, entries, tasks)
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        return prepare_transaction(self.store, self.parser, bundle, base, return_resources=False, skip_unchanged=True,
                                   merge=merge)

    def _quarantine(
        self, source: str, received: ReceivedRecord, key: str | None, exc: RequestError | MappingError
    ) -> RecordResult:
        outcome = exc.outcome()
        if received.origin is not None:
            outcome["issue"].append(
                {"severity": "information", "code": "informational", "diagnostics": f"read from {received.origin}"}
            )
        held = self.store.quarantine_add(source, received.raw, received.content_type, outcome, key)
        _log_quarantine(source, held.qid, exc)
        return RecordResult(received.index, key, "quarantined", quarantine_id=held.qid, outcome=outcome)

    def _quarantine_into(
        self,
        results: list[RecordResult | None],
        position: int,
        source: str,
        received: ReceivedRecord,
        key: str | None,
        exc: RequestError | MappingError,
    ) -> None:
        results[position] = self._quarantine(source, received, key, exc)

    def _store_group(self, records: list[PendingRecord]) -> None:
        """Write the Bundles of several records in one transaction (one commit).

        Each record is still all-or-nothing: if the database refuses the transaction, it
        rolls back and every record is written on its own, so only a refused one is
        quarantined. A record older than its stored version (``StaleRecords``, raised inside the
        transaction) is answered stale and the others written again without it. A failure of the
        database itself propagates.
        """
        written: list[WrittenResource] | None = None
        while len(records) > 1:
            try:
                written = self._commit(
                    combine_prepared([r.prepared for r in records]), [r.change for r in records]
                )
            except StaleRecords as exc:  # a late retry of an old version: written again without it
                records = [r for r in records if not _answered_stale(r, exc.keys)]
                continue
            except CLIENT_ERRORS:
                pass  # some record is refused: find it by writing them one by one
            break
        if written is None:
            for record in records:
                try:
                    alone = self._commit(record.prepared, [record.change])
                except StaleRecords as exc:
                    _answered_stale(record, exc.keys)
                    continue
                except CLIENT_ERRORS as exc:
                    record.results[record.position] = self._quarantine(record.source, record.received, record.key, exc)
                    continue
                record.results[record.position] = _stored(
                    record.received.index, record.change, alone, patient_of(record.bundle)
                )
            return
        by_url = {f"{w.type}/{w.id}": w for w in written}
        for record in records:
            urls = [entry["request"]["url"] for entry in record.bundle["entry"]]
            record.results[record.position] = _stored(
                record.received.index, record.change, [by_url[url] for url in urls], patient_of(record.bundle)
            )

    def store_record(self, mapping_set: MappingSet, source: str, record: Any, base: str = "") -> RecordResult:
        """Map one record of ``source`` and store it (or its deletion) in one transaction; raises one
        of ``CLIENT_ERRORS`` if refused."""
        mapping = mapping_set.selected(record)
        bundle, change = _mapped(mapping_set, source, record, mapping_set.record_key(record, mapping), mapping)
        written = self._commit(self._prepare_mapped(bundle, change, mapping, base), [change])
        return _stored(0, change, written, patient_of(bundle))

    def _commit(self, prepared: PreparedTransaction, changes: list[OutputChange]) -> list[WrittenResource]:
        unchanged: set[str] = set()  # skip_unchanged returned the existing version (written by anyone, any time)
        legacy = {(c.source, c.system) for c in changes if c.source != c.system and c.source not in self._moved_sources}
        with metrics().store_seconds.time():
            response = run_prepared(
                prepared, then=partial(apply_output_changes, changes=changes, legacy=legacy), unchanged=unchanged
            )
        self._moved_sources.update(source for source, _ in legacy)
        written: list[WrittenResource] = []
        for entry in response.get("entry", []):
            answer = entry["response"]
            rtype, rid, _, version = answer["location"].split("/")
            if answer["status"].startswith("201"):
                change = "created"
            elif f"{rtype}/{rid}" in unchanged:
                change = "unchanged"
            else:
                change = "updated"
            written.append(WrittenResource(rtype, rid, version, change))
        return written

    # -- quarantine ------------------------------------------------------------------------
    def replay(self, qid: int, base: str = "") -> RecordResult:
        """Run a held record again with the current mappings; it is marked replayed or stays held."""
        held = self.store.quarantine_get(qid)
        if held is None:
            raise FhirError(f"no quarantined record {qid}", status=404, code="not-found")
        if held.status != "held":
            raise FhirError(f"quarantined record {qid} is {held.status}, not held", status=409, code="conflict")
        config = self.registry.config
        source = config.sources.get(held.source)
        if source is None:
            raise FhirError(f"source {held.source!r} is no longer configured", status=409, code="conflict")
        mapping_set = config.sets[source.mapping]
        try:
            record = _parse_kept(held)
            stored = self.store_record(mapping_set, held.source, record, base)
        except StaleRecords:  # a later version came meanwhile: this one has nothing left to say
            self.store.quarantine_update(qid, status="replayed")
            log.info("quarantine replayed source=%s qid=%d stale", held.source, qid)
            stale = RecordResult(0, held.record_key, "stale", quarantine_id=qid, outcome=STALE_OUTCOME)
            return self._noted(held.source, stale)
        except CLIENT_ERRORS as exc:
            outcome = exc.outcome()
            self.store.quarantine_update(qid, status="held", outcome=outcome)
            _log_quarantine(held.source, qid, exc, replay=True)
            return self._noted(
                held.source, RecordResult(0, held.record_key, "quarantined", quarantine_id=qid, outcome=outcome)
            )
        self.store.quarantine_update(qid, status="replayed")
        log.info("quarantine replayed source=%s qid=%d resources=%d", held.source, qid, len(stored.resources))
        stored.quarantine_id = qid
        return self._noted(held.source, stored)

    def _noted(self, source: str, result: RecordResult) -> RecordResult:
        if self.journal is not None:
            self.journal([message_line(time.time(), "replayed", source, result)])
        return result

    def replay_all(self, source: str | None = None, base: str = "", limit: int = 10_000) -> list[RecordResult]:
        """Replay every held record (of one source, or all), oldest first, up to ``limit``."""
        results: list[RecordResult] = []
        after = 0
        while len(results) < limit:
            page = self.store.quarantine_list(source=source, status="held", after=after, limit=100)
            if not page:
                break
            for held in page:
                after = held.qid
                try:
                    results.append(self.replay(held.qid, base))
                except FhirError as exc:  # e.g. its source is no longer configured: leave it held
                    results.append(
                        RecordResult(0, held.record_key, "quarantined", quarantine_id=held.qid, outcome=exc.outcome())
                    )
        return results

    def discard(self, qid: int) -> None:
        """Give up on a held record (kept, marked discarded)."""
        held = self.store.quarantine_get(qid)
        if held is None:
            raise FhirError(f"no quarantined record {qid}", status=404, code="not-found")
        if held.status != "held":
            raise FhirError(f"quarantined record {qid} is {held.status}, not held", status=409, code="conflict")
        self.store.quarantine_update(qid, status="discarded")


def message_line(at: float, kind: str, source: str, result: RecordResult) -> MessageEntry:
    """The message log line of one handled record: what it wrote, or why it is held (no values)."""
    patient = result.patient or next((w.id for w in result.resources if w.type == "Patient"), None)
    if result.status == "stale":
        detail = "a later version is stored"
    elif result.status == "quarantined":
        issue = ((result.outcome or {}).get("issue") or [{}])[0]
        where = ",".join(issue.get("expression", [])[:1])
        detail = f"{issue.get('code', 'invalid')} at {where}" if where else str(issue.get("code", "invalid"))
    else:
        changed = [f"{w.type}/{w.id} {w.change}" for w in result.resources]
        detail = "; ".join(changed[:8]) + (f"; {len(changed) - 8} more" if len(changed) > 8 else "")
    qid = str(result.quarantine_id) if result.quarantine_id is not None else None
    return MessageEntry(at, kind, source, result.status, patient, result.record_key, qid, detail[:500] or None)


def _mapped(
    mapping_set: MappingSet, source: str, record: Any, key: str | None, mapping: CompiledMapping | None = None
) -> tuple[dict[str, Any], OutputChange]:
    """The record's Bundle and what it produces (both empty for a record its source deleted or
    voided); a record the mapping turns into nothing is kept, not dropped (most likely a
    value no rule expects, e.g. a new CHT contact role)."""
    deleted_key = mapping_set.retracted_key(record)
    if deleted_key is not None:
        empty = {"resourceType": "Bundle", "type": "transaction", "entry": []}
        version = mapping_set.retracted_version(record)
        return empty, OutputChange(source, mapping_set.system, deleted_key, [], deleted=True, version=version)
    mapping = mapping or mapping_set.select(record)
    bundle, outputs = mapping_set.map_outputs(record, mapping)
    if not bundle["entry"]:
        raise MappingError(
            "$", f"mapping {mapping.tag} made no resources from this record (no rule applies)",
            code="not-supported", mapping=mapping.name,
        )  # fmt: skip
    assert key is not None  # mapping the record read its id
    version = mapping_set.record_version(record, mapping)
    return bundle, OutputChange(source, mapping_set.system, key, outputs, version=version)


_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\]")


def _in_rule(
    exc: FhirError, bundle: dict[str, Any], change: OutputChange, mapping: CompiledMapping | None
) -> FhirError:
    """``exc`` with each issue about a Bundle entry prefixed by the mapping rule that made it and
    where that rule is (``[mapping rule R at set: file:line]``), as mapping errors are."""
    if mapping is None:
        return exc
    rules = {(output.rtype, output.id): output.rule for output in change.outputs}
    entries = bundle.get("entry", [])
    given = exc.issues()
    issues: list[dict[str, Any]] = []
    for issue in given:
        found = next((m for m in map(_ENTRY.match, issue.get("expression", [])) if m), None)
        index = int(found.group(1)) if found else len(entries)
        resource = entries[index].get("resource") or {} if index < len(entries) else {}
        rule = rules.get((str(resource.get("resourceType")), str(resource.get("id"))))
        if rule is not None:
            where = f"[{mapping.name} rule {rule} at {mapping.where(rule)}] "
            issue = {**issue, "diagnostics": where + str(issue.get("diagnostics", ""))}
        issues.append(issue)
    if issues == given:
        return exc
    return FhirError(exc.diagnostics, status=exc.status, code=exc.code, expression=exc.expression,
                     issues=issues, headers=exc.headers)  # fmt: skip


#: The OperationOutcome of a record not stored because a later version of it is.
STALE_OUTCOME = informational("a later version of this record is stored; this one was not applied")


def _answered_stale(record: PendingRecord, stale: set[tuple[str, str]]) -> bool:
    """Answer ``record`` as stale if it is one of ``stale``; whether it was."""
    if (record.change.system, record.change.record_key) not in stale:
        return False
    record.results[record.position] = RecordResult(
        record.received.index, record.change.record_key, "stale", outcome=STALE_OUTCOME,
        patient=patient_of(record.bundle),
    )  # fmt: skip
    return True


def _stored(
    index: int, change: OutputChange, written: list[WrittenResource], patient: str | None = None
) -> RecordResult:
    taken_back = [
        WrittenResource(done.resource.type, done.resource.id, str(done.resource.version),
                        "deleted" if done.activity == "DELETE" else "retracted")
        for done in change.retracted
    ]  # fmt: skip
    if change.deleted:
        status = "deleted"
    elif written and not taken_back and all(w.change == "unchanged" for w in written):
        status = "unchanged"
    else:
        status = "stored"
    return RecordResult(index, change.record_key, status, written + taken_back, patient=patient)


def patient_of(bundle: dict[str, Any]) -> str | None:
    """The Patient a record's Bundle is about: its Patient resource, else the first ``subject``/``patient``
    reference to one (a visit's Encounter and Observations)."""
    resources = [entry.get("resource") or {} for entry in bundle.get("entry", [])]
    for resource in resources:
        if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str):
            return str(resource["id"])
    for resource in resources:
        for field in ("subject", "patient"):
            value = resource.get(field)
            ref = value.get("reference") if isinstance(value, dict) else None
            if isinstance(ref, str) and ref.startswith("Patient/"):
                return ref.removeprefix("Patient/")
    return None


def _parse_kept(held: QuarantinedRecord) -> Any:
    """The record a quarantine entry keeps (a 422 ``FhirError`` if it cannot be read)."""
    try:
        if held.content_type == CSV:
            rows = parse_csv(held.body)
            if len(rows) != 1:
                raise InputError(f"{len(rows)} rows")
            return rows[0]
        return jsonio.loads(held.body)
    except InputError as exc:  # e.g. a CSV line of the wrong width, kept as it came
        raise FhirError(f"the kept record cannot be read back: {exc}", status=422, code="structure") from exc
    except orjson.JSONDecodeError as exc:
        raise FhirError("the kept record cannot be read back", status=422, code="structure") from exc


def _log_quarantine(source: str, qid: int, exc: RequestError | MappingError, *, replay: bool = False) -> None:
    issues = exc.issues()
    first = issues[0] if issues else {}
    where = ",".join(first.get("expression", [])[:1])
    # A record arriving held is news for the operator; a replay that still fails is the answer
    # the operator who asked for it is given (the CLI prints it, the admin API returns it), so it
    # is not repeated as a warning (the CLI's last-resort handler printed it bare).
    log.log(
        logging.INFO if replay else logging.WARNING,
        "%s source=%s qid=%d code=%s at=%s",
        "replay failed" if replay else "quarantined",
        source,
        qid,
        first.get("code", exc.code),
        where[:120],
    )
