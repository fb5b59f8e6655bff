"""The ``dhis2`` connector: delivery jobs → ``/api/tracker`` and ``/api/dataValueSets``.

One ``deliver`` call gets a batch of jobs (at most one per patient). Each job's resource is
planned into DHIS2 objects (``tracker_transform``), parents first; the batch becomes one
flat tracker payload (duplicates merged) sent with ``atomicMode=OBJECT`` and
``importStrategy=CREATE_AND_UPDATE`` — synchronously for small batches, through the async
job flow above ``async_threshold`` objects. MeasureReports become data value sets, one
request each.

Outcomes, per job (the ImportReport is read per object, E5000 traced to the parent):

==============================================  =====================================
what happened                                   outcome
==============================================  =====================================
the job's own object was created/updated        Success
DHIS2 rejected it (409, E-code), or its parent  Permanent ``dhis2_<code>`` with DHIS2's
                                                message, the DHIS2 object and the
                                                FHIR resource it came from
a value DHIS2 would reject (checked before      Permanent ``dhis2_<code>`` ("checked
sending: value type, option code)               before sending")
not committed without an error of its own       Retry ``dhis2_not_committed``
5xx, 502/504 from a proxy, timeout, reset       Retry (``classify``)
async job or report vanished / too slow         Retry ``dhis2_job_lost`` / ``_timeout``
an empty answer, or JSON cut off                Retry ``dhis2_answer_cut_short``
a well-formed answer that is no report (HTML)   Permanent ``dhis2_unexpected_response``
401, 403, other 4xx without a report            Permanent (``classify``: fix and replay)
the Patient of a visit is not stored yet        Retry ``dhis2_waiting_for_patient``
(or the Encounter of an Observation)            (``…_for_encounter``)
the household/area Location is not stored yet   Retry ``dhis2_waiting_for_location``
                                                (people arrive before their places)
the Location is stored, nothing maps it         Permanent ``dhis2_org-unit`` naming the
                                                Location chain (fix the table, replay)
aggregate ``WARNING`` (some values rejected)    Partial: delivered, one dead letter per
                                                rejected value (``aggregate_outcome``)
==============================================  =====================================

Retries and replays are safe: every UID is derived from FHIR identity, so DHIS2 updates
what an earlier (perhaps unanswered) attempt created instead of duplicating it.

Grouped refusals: a refusal names the DHIS2 object DHIS2 refused (``group``, e.g.
``EVENT/<uid>``), so every job of a visit refused for that event is one dead letter, and
it keeps the request sent (JSON body, no credentials) and DHIS2's whole import report
(both bounded to 64 KiB).

Unchanged objects are not sent (``digests``, kept in the delivery queue): each DHIS2 object
planned is compared with a digest of it as DHIS2 last accepted it; only changed ones are
sent, and a job none of whose objects changed succeeds without a request. A digest is
recorded only after DHIS2 reported the object accepted, so a lost answer, a crash or a
refusal leaves the old digest and the object is sent again; a refusal for a missing parent
forgets the digests of the parents left out (DHIS2 no longer holds what it accepted).

Retractions (a FHIR resource entered in error, revoked, cancelled or deleted):

=============================================  ========================================
FHIR change                                    DHIS2
=============================================  ========================================
Observation/MedicationDispense/… voided or     its event is re-sent (CREATE_AND_UPDATE)
deleted                                        with that data value ``null``: cleared
Encounter ``entered-in-error`` or deleted      its event deleted (``importStrategy=DELETE``)
MeasureReport deleted                          its data values deleted (``importStrategy=DELETE``
                                               on ``/api/dataValueSets``)
Patient deleted                                enrollment(s) and tracked entity deleted,
                                               only when no live visit of theirs remains
                                               (else when their last visit is retracted)
EpisodeOfCare ``entered-in-error`` or deleted  its enrollment deleted, only when no live
                                               visit of its patient remains
=============================================  ========================================

An event DHIS2 refuses to move to another enrollment (E1128: the visit's record now belongs
to another person) is deleted and planned again in the next generation of its UID. An
EpisodeOfCare enrollment refused because the person's earlier visits already enrolled them
(E1015) takes that (person, program) enrollment over instead (``_adopt_enrollments``); the
events planned under it are not moved.

Deleting an object DHIS2 no longer has (E1032/E1081/E1063, or already deleted
E1082/E1113/E1114) counts as done: a retried delete is not a failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import orjson

from gateway import jsonio
from gateway.clock import Clock
from gateway.connectors.base import (
    DeliveryOutcome,
    DigestStore,
    Job,
    Partial,
    Permanent,
    RecordedRequest,
    RecordedResponse,
    Retry,
    Success,
)
from gateway.connectors.classify import classify, record_request, record_response
from gateway.connectors.dhis2.aggregate_outcome import aggregate_outcome
from gateway.connectors.dhis2.aggregate_summary import parse_import_summary
from gateway.connectors.dhis2.aggregate_transform import AggregatePlan, measure_report_to_data_value_set
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.config import Dhis2Options, check_version
from gateway.connectors.dhis2.errors import (
    Dhis2Error,
    Dhis2HttpError,
    Dhis2JobLost,
    Dhis2JobTimeout,
    Dhis2TransportError,
)
from gateway.connectors.dhis2.jobs import run_async_import
from gateway.connectors.dhis2.mapping_load import (
    BoundAggregate,
    BoundTracker,
    load_aggregate,
    load_tables,
    load_tracker,
)
from gateway.connectors.dhis2.metadata import MetadataCache, MetadataSnapshot, pull_metadata
from gateway.connectors.dhis2.orgunits import OrgUnitResolver
from gateway.connectors.dhis2.reports import ObjectState, TrackerReport, parse_tracker_report
from gateway.connectors.dhis2.sources import BatchSource, ResourceSource
from gateway.connectors.dhis2.tracker_transform import (
    Dhis2MappingError,
    Dhis2PendingError,
    PlannedObject,
    TrackerPlan,
    TrackerTransformer,
)
from gateway.connectors.dhis2.writeback import WriteBack, WriteBackTarget
from gateway.mapping import LoadIssue, MappingError, MappingLoadError

__all__ = ["Dhis2Connector"]

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]
_TRACKER_PARAMS = {"atomicMode": "OBJECT", "importStrategy": "CREATE_AND_UPDATE", "reportMode": "ERRORS"}
_AGGREGATE_PARAMS = {"importStrategy": "CREATE_AND_UPDATE"}
_ORDER = ("TRACKED_ENTITY", "ENROLLMENT", "EVENT")
_KEYS = {"TRACKED_ENTITY": "trackedEntities", "ENROLLMENT": "enrollments", "EVENT": "events"}
_DATA_ELEMENT = re.compile(r"DataElement `([A-Za-z][A-Za-z0-9]{10})`")
_OPTION_VALUE = re.compile(r"Value `([^`]*)` is not a valid option")
_WRITTEN_BACK = frozenset({"Patient", "EpisodeOfCare", "Encounter"})  # resources that get DHIS2 UIDs
# "Does not exist" and "already deleted": a delete DHIS2 answers so with has nothing left to do.
_GONE = frozenset({"E1032", "E1081", "E1063", "E1082", "E1113", "E1114"})
_DELETE = "delete"  # TrackerPlan.note of a plan sent with importStrategy=DELETE
# "Is already deleted and cannot be modified": DHIS2 keeps deleted UIDs for ever, so the object
# (restored at its source since) needs the next generation of its UID (TrackerTransformer.uid).
_DELETED_BEFORE = frozenset({"E1082", "E1113", "E1114"})
# A parent DHIS2 does not have (deleted or never stored there, whatever the digests say): the
# digests of objects left out as unchanged are forgotten, so the next attempt sends them again.
_PARENT_MISSING = frozenset({"E1063", "E1068", "E1081", "E1113", "E1114", "E1033"})


def object_digest(payload: JsonObject) -> str:
    """A digest of one tracker object as sent (key order does not matter)."""
    return hashlib.sha256(jsonio.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


@dataclass
class _Prepared:
    """A job after planning: either an outcome already, or what to send."""

    job: Job
    outcome: DeliveryOutcome | None = None
    plan: TrackerPlan | None = None
    aggregate: AggregatePlan | None = None
    aggregate_strategy: str = "CREATE_AND_UPDATE"  # DELETE: the values of a deleted MeasureReport
    uncomplete: bool = False  # and the data set's completeness registration the report made
    restore: WriteBackTarget | None = None  # identifiers to put back (writeback case 3)


@dataclass(frozen=True, slots=True)
class _Evidence:
    """What one tracker import told: the report, and what it means for each object."""

    report: TrackerReport
    unchanged: frozenset[tuple[str, str]]  # not sent: as DHIS2 last accepted them
    done: frozenset[tuple[str, str]]  # accepted now (or, for a delete, gone already)
    request: RecordedRequest
    response: RecordedResponse


def _name(key: tuple[str, str]) -> str:
    return f"{key[0]}/{key[1]}"


def _json(response: httpx.Response) -> Any:
    try:
        return jsonio.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def _cut_short(response: httpx.Response) -> bool:
    """An empty answer, or JSON that does not parse: the answer was lost on the way (a proxy, a
    dropped connection), not refused. Sending again is safe (stable UIDs, CREATE_AND_UPDATE); an
    HTML page or other well-formed answer is a misconfiguration that retrying would not mend."""
    kind = response.headers.get("content-type", "")
    return not response.content.strip() or ("json" in kind and _json(response) is None)


def _combined(reports: list[TrackerReport]) -> TrackerReport:
    """The reports of one delivery's imports (a delete sends one a level) read as one."""
    if len(reports) == 1:
        return reports[0]
    statuses = [r.status for r in reports]
    return TrackerReport(
        status=next((s for s in ("ERROR", "WARNING") if s in statuses), "OK"),
        errors=tuple(e for r in reports for e in r.errors),
        accepted=frozenset().union(*(r.accepted for r in reports)),
        committed=all(r.committed for r in reports),
        stats={name: sum(r.stats.get(name, 0) for r in reports) for name in reports[0].stats},
    )


class Dhis2Connector:
    """Delivers FHIR changes to one DHIS2 instance (``gateway.connectors.base.Connector``)."""

    def __init__(
        self,
        client: Dhis2Client,
        options: Dhis2Options,
        source: ResourceSource,
        clock: Clock,
        *,
        mappings_root: Path | None = None,
        snapshot: MetadataSnapshot | None = None,
        writeback: WriteBack | None = None,
        digests: DigestStore | None = None,
        destination: str = "dhis2",
    ) -> None:
        self.client = client
        self.writeback = writeback
        self.digests = digests  # None: every planned object is sent (no change detection)
        self.destination = destination
        self.options = options
        self.source = source
        self.clock = clock
        self._root = mappings_root
        self._snapshot = snapshot
        self._tracker: TrackerTransformer | None = None
        self._aggregate: BoundAggregate | None = None
        self._ready = False
        self._bound_at = 0.0
        self._lock = asyncio.Lock()
        if snapshot is not None:
            self._bind(snapshot)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    # -- setup

    def _bind(self, snapshot: MetadataSnapshot) -> None:
        """Load the mappings against ``snapshot``; ``MappingLoadError`` lists every problem."""
        issues: list[LoadIssue] = []
        paths = [p for p in (self.options.mapping, self.options.aggregate_mapping) if p is not None]
        root = self._root or (paths[0].parent.parent if paths else Path("mappings"))
        tables = load_tables(root, issues)
        if issues:
            raise MappingLoadError(issues)
        tracker: BoundTracker | None = None
        if self.options.mapping is not None:
            tracker = load_tracker(self.options.mapping, snapshot, tables)
        if self.options.aggregate_mapping is not None:
            self._aggregate = load_aggregate(self.options.aggregate_mapping, snapshot, tables)
        per_person = self.options.tracked_entity_per == "person"
        namespace = self.options.uid_namespace
        known = self._tracker.generations if self._tracker is not None else {}
        aliases = self._tracker.enrollment_aliases if self._tracker is not None else {}
        self._tracker = (
            TrackerTransformer(tracker, namespace=namespace, per_person=per_person, now=self.clock.now)
            if tracker
            else None
        )
        if self._tracker is not None:
            self._tracker.generations.update(known)  # a metadata refresh does not make UIDs new again
            self._tracker.enrollment_aliases.update(aliases)
        self._snapshot = snapshot
        self._ready = True
        self._bound_at = self.clock.now()

    async def _ensure_ready(self) -> DeliveryOutcome | None:
        """Metadata and mappings, fetched once; a Retry when DHIS2 cannot be reached yet."""
        if self._ready:
            return None
        async with self._lock:
            if self._ready:
                return None
            try:
                info = await self.client.system_info()
                check_version(info.version)
                logger.info("dhis2 connector: DHIS2 %s", info.version_text[:32])
                snapshot = await self._metadata()
            except Dhis2TransportError:
                return Retry(delay=None, reason="connection")
            except Dhis2Error as exc:
                status = getattr(exc, "http_status", 0)
                if status >= 500 or status in (408, 429):
                    return Retry(delay=None, reason=f"http_{status}")
                return Permanent(reason="dhis2_setup", detail=str(exc))
            except ValueError as exc:  # an unsupported DHIS2 version
                return Permanent(reason="dhis2_setup", detail=str(exc))
            self._bind(snapshot)
        return None

    @property
    def server_version(self) -> tuple[int, int] | None:
        """The DHIS2 version detected from ``/api/system/info`` (None before the first delivery)."""
        return self.client.version

    @property
    def snapshot(self) -> MetadataSnapshot | None:
        """The metadata the mappings are bound to (None before the first delivery)."""
        return self._snapshot

    async def refresh_metadata(self) -> None:
        """Fetch metadata now and rebind the mappings (keeps the old binding if DHIS2 is down)."""
        async with self._lock:
            try:
                snapshot = await pull_metadata(self.client)
            except Dhis2Error as exc:
                logger.warning("dhis2 metadata refresh failed: %s", type(exc).__name__)
                self._bound_at = self.clock.now()  # try again after another max_age
                return
            self.use_metadata(snapshot)

    def use_metadata(self, snapshot: MetadataSnapshot) -> bool:
        """Keep ``snapshot`` (cache file) and rebind the mappings to it; False if they no longer fit."""
        if self.options.metadata_cache is not None:
            snapshot.save(self.options.metadata_cache)
        try:
            self._bind(snapshot)
        except MappingLoadError as exc:
            # DHIS2 changed under the mapping: keep sending with the old binding (DHIS2's own
            # errors then name what no longer fits) and say so once per refresh.
            logger.error("dhis2 mappings no longer match DHIS2 metadata (%d problems)", len(exc.issues))
            self._bound_at = self.clock.now()
            return False
        return True

    async def _metadata(self) -> MetadataSnapshot:
        path = self.options.metadata_cache
        if path is not None:
            cache = MetadataCache(path)
            if cache.snapshot is not None:
                return cache.snapshot
            return await cache.refresh(self.client)
        return await pull_metadata(self.client)

    # -- delivery

    async def deliver(self, jobs: Sequence[Job]) -> list[DeliveryOutcome]:
        """Send the batch; one outcome per job, in order."""
        problem = await self._ensure_ready()
        if problem is not None:
            return [problem for _ in jobs]
        if self.clock.now() - self._bound_at > self.options.metadata_max_age:
            await self.refresh_metadata()
        prepared = await anyio.to_thread.run_sync(self._prepare_all, list(jobs))
        tracker_jobs = [p for p in prepared if p.outcome is None and p.plan is not None]
        if tracker_jobs:
            await self._send_tracker(tracker_jobs)
        for item in prepared:
            if item.outcome is None and item.aggregate is not None:
                item.outcome = await self._send_aggregate(item)
        return [item.outcome or Success(detail="nothing to send") for item in prepared]

    def _prepare_all(self, jobs: list[Job]) -> list[_Prepared]:
        # The jobs of one visit plan the same objects: one batch reads each resource once.
        hidden = self.writeback.hiding(self.source) if self.writeback is not None else self.source
        source = BatchSource(hidden)
        prepared = [self._prepare(job, source) for job in jobs]
        restores = [item.restore for item in prepared if item.restore is not None]
        if restores:
            assert self.writeback is not None
            self._write_back(restores)
        return prepared

    def _prepare(self, job: Job, source: ResourceSource) -> _Prepared:
        """Plan one job, reading through ``source`` (the batch's, written-back UIDs hidden)."""
        item = _Prepared(job)
        if job.op == "delete":
            return self._prepare_delete(item, source)
        if job.resource_type in ("Encounter", "EpisodeOfCare") and self._tracker is not None:
            # A voided visit or enrollment (a retraction's status version) is deleted in DHIS2,
            # not re-sent with a status DHIS2 would read as active.
            if job.resource().get("status") == "entered-in-error":
                return self._prepare_delete(item, source)
        if self.writeback is not None and job.resource_type in _WRITTEN_BACK:
            held = self.writeback.already_held(job)
            if held is not None:
                item.restore = held.restore
                what = "identifiers restored" if held.restore else "UIDs written back"
                item.outcome = Success(detail=f"DHIS2 {what}: nothing new for DHIS2")
                return item
        resource = job.resource()
        if self.writeback is not None:  # plans never depend on the UIDs written back (see writeback)
            resource = self.writeback.hide(resource)
        try:
            if resource.get("resourceType") == "MeasureReport":
                if self._aggregate is None:
                    item.outcome = Success(detail="no aggregate mapping: MeasureReport not sent")
                    return item
                return self._plan_report(item, resource, source)
            if self._tracker is None:
                item.outcome = Success(detail="no tracker mapping")
                return item
            tracker_plan = self._tracker.plan(resource, source)
        except Dhis2MappingError as exc:
            item.outcome = Permanent(
                reason=f"dhis2_{exc.code}",
                detail=f"{exc.code} (checked before sending): {exc.message}; FHIR {exc.fhir_ref} "
                f"(job {job.ref})",
                # Every job of a visit meets the same bad value: one dead letter for them all.
                group=f"checked/{exc.code}/{exc.fhir_ref}",
            )
            return item
        except Dhis2PendingError as exc:
            item.outcome = Retry(delay=None, reason=f"dhis2_waiting_for_{exc.waiting_for}", link_ok=True)
            logger.info("dhis2 job %s waits for its %s", job.id, exc.waiting_for)
            return item
        except MappingError as exc:
            item.outcome = Permanent(
                reason="mapping_error", detail=f"{exc.code} at {exc.path} (job {job.ref})"
            )
            return item
        if tracker_plan.primary is None:
            item.outcome = Success(detail=tracker_plan.note)
        else:
            item.plan = tracker_plan
        return item

    def _prepare_delete(self, item: _Prepared, source: ResourceSource) -> _Prepared:
        """A retraction: an Encounter voided or deleted, any other resource deleted."""
        job = item.job
        if job.resource_type == "MeasureReport" and self._aggregate is not None:
            return self._prepare_report_delete(item, source)
        if self._tracker is None:
            item.outcome = Success(detail=f"deleting a {job.resource_type} is not propagated to DHIS2")
            return item
        try:
            if job.resource_type == "Encounter":
                visit = job.resource() or source.was_deleted("Encounter", job.resource_id) or {}
                plan = self._tracker.visit_deletes(job.resource_id, visit, source)
            elif job.resource_type == "Patient":
                plan = self._tracker.person_deletes(job.resource_id, source)
            elif job.resource_type == "EpisodeOfCare":
                # Planned like a live one, a deleted EpisodeOfCare would re-send (or create) its
                # enrollment ACTIVE: DHIS2 deletes it instead (importStrategy=DELETE).
                episode = job.resource() or source.was_deleted("EpisodeOfCare", job.resource_id)
                plan = self._tracker.episode_deletes(job.resource_id, episode, source)
            else:
                last = source.was_deleted(job.resource_type, job.resource_id)
                if last is None:
                    plan = TrackerPlan.skip(f"deleting a {job.resource_type} is not propagated to DHIS2")
                else:
                    # The deleted resource is no longer found, so its visit's event is planned
                    # with its data value null: DHIS2 clears it.
                    plan = self._tracker.plan(last, source)
        except Dhis2PendingError as exc:
            item.outcome = Retry(delay=None, reason=f"dhis2_waiting_for_{exc.waiting_for}", link_ok=True)
            return item
        except (Dhis2MappingError, MappingError) as exc:
            item.outcome = Success(detail=f"retraction not sent: {type(exc).__name__}")
            return item
        if plan.primary is None:
            item.outcome = Success(detail=plan.note)
        else:
            item.plan = plan
        return item

    def _prepare_report_delete(self, item: _Prepared, source: ResourceSource) -> _Prepared:
        """A deleted MeasureReport: the values its last version sent are deleted (importStrategy=DELETE)."""
        assert self._aggregate is not None
        last = source.was_deleted("MeasureReport", item.job.resource_id)
        if last is None:
            item.outcome = Success(detail="deleted MeasureReport not found: nothing to delete in DHIS2")
            return item
        try:
            # Re-sent with CREATE_AND_UPDATE, DHIS2 would keep every value; DELETE removes them
            # (a value DHIS2 no longer has is counted ignored, not refused).
            return self._plan_report(item, last, source, strategy="DELETE")
        except (Dhis2MappingError, MappingError) as exc:
            item.outcome = Success(detail=f"retraction not sent: {type(exc).__name__}")
            return item

    def _plan_report(
        self, item: _Prepared, report: JsonObject, source: ResourceSource, strategy: str = "CREATE_AND_UPDATE"
    ) -> _Prepared:
        """``item`` with the data value set of a MeasureReport to send with ``strategy`` (or done: nothing to send)."""
        aggregate = self._aggregate
        assert aggregate is not None
        plan = measure_report_to_data_value_set(report, aggregate, OrgUnitResolver(aggregate.org_units, source))
        if plan.payload is None:
            item.outcome = Success(detail=plan.note)
        else:
            if strategy == "DELETE" and "completeDate" in plan.payload:
                # DHIS2 registers the completeness a data value set carries whatever its import
                # strategy: deleting the values would register the data set complete again.
                payload = {k: v for k, v in plan.payload.items() if k != "completeDate"}
                plan = dataclasses.replace(plan, payload=payload)
                item.uncomplete = True
            item.aggregate = plan
            item.aggregate_strategy = strategy
        return item

    # -- tracker

    async def _send_tracker(self, items: list[_Prepared]) -> None:
        deletes = [i for i in items if i.plan is not None and i.plan.note == _DELETE]
        writes = [i for i in items if i not in deletes]
        for group, strategy in ((writes, "CREATE_AND_UPDATE"), (deletes, "DELETE")):
            if group:
                await self._send_tracker_group(group, strategy)

    async def _send_tracker_group(self, items: list[_Prepared], strategy: str) -> None:
        merged: dict[tuple[str, str], PlannedObject] = {}
        for item in items:
            assert item.plan is not None
            for obj in item.plan.objects:
                merged[(obj.tracker_type, obj.uid)] = obj
        digests = {key: object_digest(obj.payload) for key, obj in merged.items()}
        unchanged: set[tuple[str, str]] = set()
        if strategy != "DELETE":
            accepted = await self._accepted(list(merged))
            unchanged = {key for key in merged if accepted.get(_name(key)) == digests[key]}
        to_send = {key: obj for key, obj in merged.items() if key not in unchanged}
        if not to_send:
            for item in items:
                item.outcome = Success(detail="unchanged since DHIS2 last accepted it: nothing sent")
            await self._write_back_accepted(items, frozenset(unchanged))
            return
        params = {**_TRACKER_PARAMS, "importStrategy": strategy}
        # Deletes go one level a request, children first: DHIS2 validates a delete against what it
        # stores, so a tracked entity sent beside its enrollments still has them when judged, and a
        # user without F_TEI_CASCADE_DELETE / F_ENROLLMENT_CASCADE_DELETE is refused (E1100 / E1103).
        levels = (
            [[key for key in to_send if key[0] == kind] for kind in reversed(_ORDER)]
            if strategy == "DELETE"
            else [list(to_send)]
        )
        answers: list[tuple[TrackerReport, RecordedRequest, RecordedResponse]] = []
        for keys in (level for level in levels if level):
            payload: JsonObject = {_KEYS[kind]: [] for kind in _ORDER}
            for kind, uid in keys:
                payload[_KEYS[kind]].append(to_send[(kind, uid)].payload)
            sent = self._recorded_request(payload, params)
            answer = await self._import(payload, params, len(keys), sent)
            if not isinstance(answer, tuple):
                if answers:  # what earlier levels deleted is gone: forget its digests
                    await self._record({_name(key): None for r, _, _ in answers for key in r.accepted})
                self._settle_all(items, answer)
                return
            answers.append((answer[0], sent, answer[1]))
        report = _combined([r for r, _, _ in answers])
        _, sent, answered = next(((r, q, a) for r, q, a in answers if r.errors), answers[-1])
        reborn = await self._reborn(report, to_send, strategy)
        adopted = set() if strategy == "DELETE" else self._adopt_enrollments(report, merged)
        # An event refused (E1128) only because it was planned under an enrollment now adopted
        # stays where it is: planned again, it names the enrollment DHIS2 holds.
        staying = {uid for _, uid in adopted}
        moved, move_failed = (set(), None) if strategy == "DELETE" else await self._moved(report, to_send, staying)
        reborn |= moved
        done = set(report.accepted)
        if strategy == "DELETE":  # gone already: nothing left to delete (unless a newer generation is)
            done |= {(e.tracker_type, e.uid) for e in report.errors if e.code in _GONE}
            done -= reborn
        evidence = _Evidence(report, frozenset(unchanged), frozenset(done), sent, answered)
        for item in items:
            assert item.plan is not None
            planned = {(obj.tracker_type, obj.uid) for obj in item.plan.objects}
            if reborn.intersection(planned):
                # Planned again with the UIDs' next generation (a short wait: nothing is wrong).
                item.outcome = Retry(delay=None, reason="dhis2_uid_reborn", link_ok=True)
            elif adopted.intersection(planned):
                # Planned again under the enrollment DHIS2 holds for the person (a short wait).
                item.outcome = Retry(delay=None, reason="dhis2_enrollment_adopted", link_ok=True)
            elif move_failed is not None and move_failed[0].intersection(planned):
                item.outcome = move_failed[1]  # the old event's delete did not go through: again later
            else:
                item.outcome = self._tracker_outcome(item, evidence, merged)
        # Only what DHIS2 reported accepted gets a digest (a deleted object loses its own).
        recorded: dict[str, str | None] = {
            _name(key): (None if strategy == "DELETE" else digests[key]) for key in to_send if key in done
        }
        if unchanged and any(e.code in _PARENT_MISSING for e in report.errors):
            recorded.update({_name(key): None for key in unchanged})
        await self._record(recorded)
        if strategy != "DELETE":
            await self._write_back_accepted(items, frozenset(report.accepted | unchanged))

    async def _import(
        self, payload: JsonObject, params: dict[str, str], count: int, sent: RecordedRequest
    ) -> tuple[TrackerReport, RecordedResponse] | DeliveryOutcome:
        """One tracker import (sync, or the async job flow above the threshold): its report, or the
        outcome for every job in it when there is no report to read."""
        try:
            if count > self.options.async_threshold:
                response = await run_async_import(
                    self.client,
                    payload,
                    params,
                    poll_interval=self.options.job_poll_interval,
                    timeout=self.options.job_timeout,
                    sleep=self.clock.sleep,
                )
            else:
                response = await self.client.post_tracker(payload, {**params, "async": "false"})
        except Dhis2TransportError as exc:
            cause = exc.__cause__
            return classify(cause if isinstance(cause, BaseException) else exc, now=self.clock.now())
        except Dhis2JobLost:
            return Retry(delay=None, reason="dhis2_job_lost")
        except Dhis2JobTimeout:
            return Retry(delay=None, reason="dhis2_job_timeout")
        except Dhis2HttpError as exc:  # the job flow met a refusal (401/403 …) while polling
            status = exc.http_status
            if status >= 500 or status in (408, 429):
                return Retry(delay=None, reason=f"http_{status}")
            return Permanent(reason=f"http_{status}", detail=str(exc), request=sent)
        body = _json(response)
        if response.status_code in (200, 409) and isinstance(body, dict):
            try:
                return parse_tracker_report(body), record_response(response)
            except Dhis2Error:
                pass
        outcome = classify(response, now=self.clock.now())
        if isinstance(outcome, Success) and _cut_short(response):
            outcome = Retry(delay=None, reason="dhis2_answer_cut_short")
        elif isinstance(outcome, Success):
            outcome = Permanent(
                reason="dhis2_unexpected_response",
                detail=f"HTTP {response.status_code} without an ImportReport",
            )
        if isinstance(outcome, Permanent):
            outcome = dataclasses.replace(outcome, request=sent, response=record_response(response))
        return outcome

    async def _reborn(
        self, report: TrackerReport, sent: dict[tuple[str, str], PlannedObject], strategy: str
    ) -> set[tuple[str, str]]:
        """The objects sent that DHIS2 had deleted before (E1082/E1113/E1114) and must be planned
        again in another generation of their UID: a write takes the next one (recorded for every
        process, under ``generation:<kind>:<seed>`` in the digest store), a delete one another
        process took since (this one had not heard of it). Restored records reach DHIS2 again."""
        if self._tracker is None:
            return set()
        deleted = dict.fromkeys((e.tracker_type, e.uid) for e in report.errors if e.code in _DELETED_BEFORE)
        hits = [key for key in deleted if key in sent and sent[key].seed]
        if not hits:
            return set()
        return await self._next_generations(hits, sent, strategy)

    def _adopt_enrollments(
        self, report: TrackerReport, planned: dict[tuple[str, str], PlannedObject]
    ) -> set[tuple[str, str]]:
        """EpisodeOfCare enrollments DHIS2 refused because the person already has an ACTIVE one in
        the program (E1015): the one their visits made before the EpisodeOfCare arrived, derived
        from (person, program). The EpisodeOfCare takes that enrollment over (updating it) rather
        than stay refused for good while its visits, re-planned under it, would have their events
        deleted as moved (E1128). Each process learns it from the same answer; the refused
        enrollments are returned (their jobs are planned again)."""
        if self._tracker is None:
            return set()
        adopted: set[tuple[str, str]] = set()
        for error in report.errors:
            key = (error.tracker_type, error.uid)
            found = planned.get(key)
            if error.code != "E1015" or found is None or key[0] != "ENROLLMENT":
                continue
            if not found.seed.startswith("EpisodeOfCare/"):
                continue  # already the (person, program) enrollment, or one adopted before
            te = planned.get(("TRACKED_ENTITY", str(found.payload.get("trackedEntity"))))
            if te is None or not te.seed:
                continue
            held = f"{te.seed}|{found.payload.get('program')}"
            if self._tracker.uid("ENROLLMENT", held) == key[1]:
                continue
            self._tracker.adopt_enrollment(found.origin, held)
            adopted.add(key)
            logger.info("dhis2 ENROLLMENT of %s: the person's enrollment made by earlier visits adopted", found.origin)
        return adopted

    async def _moved(
        self,
        report: TrackerReport,
        sent: dict[tuple[str, str], PlannedObject],
        staying: Collection[str] = (),
    ) -> tuple[set[tuple[str, str]], tuple[set[tuple[str, str]], DeliveryOutcome] | None]:
        """Events DHIS2 refused to move (E1128: another enrollment or program stage, i.e. a visit whose
        source record now belongs to another person): DHIS2 never moves an event, so the old one is
        deleted (it would otherwise stay with the wrong person) and the visit is planned again in the
        next generation of its UID. Returns the events planned again, and (events, outcome) when
        their delete did not go through (tried again with the job)."""
        if self._tracker is None:
            return set(), None
        keys = [
            key
            for key in dict.fromkeys((e.tracker_type, e.uid) for e in report.errors if e.code == "E1128")
            if key[0] == "EVENT" and key in sent and sent[key].seed
            and sent[key].payload.get("enrollment") not in staying
        ]
        if not keys:
            return set(), None
        params = {**_TRACKER_PARAMS, "importStrategy": "DELETE"}
        payload: JsonObject = {"trackedEntities": [], "enrollments": [], "events": [{"event": uid} for _, uid in keys]}
        answer = await self._import(payload, params, len(keys), self._recorded_request(payload, params))
        if not isinstance(answer, tuple):
            return set(), (set(keys), answer)
        deleted = answer[0]
        gone = {
            key
            for key in keys
            if key in deleted.accepted or any(e.code in _GONE for e in deleted.errors_for(*key))
        }
        await self._record({_name(key): None for key in gone})
        for key in gone:
            logger.info("dhis2 EVENT %s belongs to another enrollment now: deleted, planned again", key[1])
        failed = set(keys) - gone
        retry = (failed, Retry(delay=None, reason="dhis2_event_move_not_deleted")) if failed else None
        return await self._next_generations(list(gone), sent, "CREATE_AND_UPDATE"), retry

    async def _next_generations(
        self, hits: list[tuple[str, str]], sent: dict[tuple[str, str], PlannedObject], strategy: str
    ) -> set[tuple[str, str]]:
        """Plan ``hits`` (deleted in DHIS2) in another generation of their UIDs: a write takes the
        next one, recorded for every process; a delete one another process took since."""
        assert self._tracker is not None
        if not hits:
            return set()
        names = {key: f"generation:{key[0]}:{sent[key].seed}" for key in hits}
        read = await self._stored_values(list(names.values()), "UID generations")
        if read is None and strategy == "DELETE":
            # Whether another process made a newer generation cannot be told: counting the old
            # UID's "already deleted" as done could leave that one live. Ask again later.
            return set(hits)
        known = read or {}
        changed: set[tuple[str, str]] = set()
        updates: dict[str, str | None] = {}
        for key, name in names.items():
            kind, seed = key[0], sent[key].seed
            used = self._tracker.generation_of(kind, seed, key[1])
            if used is None:
                continue  # planned before a generation this process adopted since: planned again anyway
            stored = int(known[name]) if known.get(name, "").isdigit() else 0
            if strategy == "DELETE":
                if stored <= used:
                    continue  # deleted already, and no newer generation exists: done
                chosen = stored
            else:
                chosen = max(stored, used + 1)
                updates[name] = str(chosen)
            self._tracker.adopt(kind, seed, chosen)
            changed.add(key)
            logger.info("dhis2 %s deleted before: planned again in generation %d", kind, chosen)
        await self._record(updates)
        return changed

    async def _stored_values(self, names: list[str], what: str) -> dict[str, str] | None:
        """Values kept in the digest store under ``names`` ({} without a digest store; None, logged
        as ``what``, when the queue cannot say just now)."""
        if self.digests is None or not names:
            return {}
        try:
            return await self.digests.accepted_digests(self.destination, names)
        except Exception as exc:  # the queue is busy or down
            logger.warning("dhis2 %s unavailable (%s)", what, type(exc).__name__)
            return None

    async def _accepted(self, keys: list[tuple[str, str]]) -> dict[str, str]:
        """Digests of objects as DHIS2 last accepted them (none known if the queue cannot say:
        everything is sent, which is always safe)."""
        found = await self._stored_values([_name(key) for key in keys], "accepted digests (sending every object)")
        return found or {}

    async def _record(self, digests: dict[str, str | None]) -> None:
        if self.digests is None or not digests:
            return
        try:
            await self.digests.record_digests(self.destination, digests)
        except Exception as exc:  # the next change re-sends what was not recorded: safe
            logger.warning("dhis2 accepted digests not recorded (%s)", type(exc).__name__)

    def _recorded_request(
        self, payload: JsonObject, params: dict[str, str], path: str = "/api/tracker"
    ) -> RecordedRequest:
        """The import request as kept with a dead letter (built here: it never carries credentials)."""
        request = httpx.Request(
            "POST",
            self.client.base_url + path,
            params=params,
            content=jsonio.dumps(payload),
            headers={"Content-Type": "application/json"},
        )
        return record_request(request)

    async def _write_back_accepted(self, items: list[_Prepared], held: frozenset[tuple[str, str]]) -> None:
        """Write back the UIDs of objects DHIS2 holds (accepted now, or unchanged since accepted)."""
        if self.writeback is None:
            return
        targets = [
            WriteBackTarget(item.job.resource_type, item.job.resource_id, item.job.version, tuple(found))
            for item in items
            if isinstance(item.outcome, Success)
            and item.plan is not None
            and (found := self.writeback.identifiers_for(item.job.ref, item.plan, held))
        ]
        if targets:
            await anyio.to_thread.run_sync(self._write_back, targets)

    def _write_back(self, targets: list[WriteBackTarget]) -> None:
        """Write UIDs back; a store failure costs only the identifiers (DHIS2 has the data)."""
        assert self.writeback is not None
        try:
            self.writeback.apply(targets, now=self.clock.now())
        except Exception as exc:  # the store is down or busy: the next change writes them back
            logger.warning("dhis2 UID write-back of %d resources failed: %s", len(targets), type(exc).__name__)

    def _settle_all(self, items: list[_Prepared], outcome: DeliveryOutcome) -> None:
        for item in items:
            item.outcome = outcome

    def _tracker_outcome(
        self, item: _Prepared, evidence: _Evidence, merged: dict[tuple[str, str], PlannedObject]
    ) -> DeliveryOutcome:
        assert item.plan is not None and item.plan.primary is not None
        report = evidence.report
        kind, uid = item.plan.primary
        state = report.state_of(kind, uid)
        if (kind, uid) in evidence.done:
            state = ObjectState.ACCEPTED
        elif (kind, uid) in evidence.unchanged:
            refused = any(report.errors_for(obj.tracker_type, obj.uid) for obj in item.plan.objects)
            state = ObjectState.REJECTED if refused else ObjectState.ACCEPTED
        if state is ObjectState.ACCEPTED:
            return Success(detail=f"{kind} {uid}")
        cause = None
        if state in (ObjectState.REJECTED, ObjectState.NOT_COMMITTED):
            # The plan lists parents first: the first of them DHIS2 refused is the cause
            # (a tracked entity's E1090 explains its enrollment's E1018 and its event's E5000).
            cause = next(
                (
                    found
                    for obj in item.plan.objects
                    if (found := report.root_cause(obj.tracker_type, obj.uid)) is not None
                ),
                None,
            )
        if cause is not None:
            source = merged.get((cause.tracker_type, cause.uid))
            origin = source.origin if source is not None else item.job.ref
            if source is not None:
                element = _DATA_ELEMENT.search(cause.message)
                value = _OPTION_VALUE.search(cause.message)
                origin = source.origin_of(
                    element.group(1) if element else None, value.group(1) if value else None
                )
            detail = (
                f"{cause.code}: {cause.message} [DHIS2 {cause.tracker_type} {cause.uid} from FHIR {origin}; "
                f"job {item.job.ref} → {kind} {uid}]"
            )
            return Permanent(
                reason=f"dhis2_{cause.code}",
                detail=detail,
                request=evidence.request,
                response=evidence.response,
                group=f"{cause.tracker_type}/{cause.uid}",
            )
        if state is ObjectState.NOT_COMMITTED:
            return Retry(delay=None, reason="dhis2_not_committed")
        return Retry(delay=None, reason="dhis2_unreported")

    # -- aggregate

    async def _uncomplete(self, payload: JsonObject) -> DeliveryOutcome | None:
        """Un-register the completeness of a deleted report's data set; the outcome when that fails
        (a retry repeats the value deletion too, which changes nothing twice), else None."""
        if payload.get("attributeOptionCombo"):
            # The endpoint names an attribute option combo by its category combo and options
            # (cc, cp), which the mapping does not hold: left, and said.
            return Permanent(reason="dhis2_uncomplete_not_sent",
                             detail="the values were deleted; the data set's completeness registration for attribute"
                                    f" option combo {payload['attributeOptionCombo']} is left: un-complete it in DHIS2")
        data_set, period, org_unit = str(payload["dataSet"]), str(payload["period"]), str(payload["orgUnit"])
        try:
            response = await self.client.uncomplete(data_set, period, org_unit)
        except Dhis2TransportError as exc:
            cause = exc.__cause__
            return classify(cause if isinstance(cause, BaseException) else exc, now=self.clock.now())
        if response.is_success:
            return None
        outcome = classify(response, now=self.clock.now())
        return None if isinstance(outcome, Success) else outcome

    async def _send_aggregate(self, item: _Prepared) -> DeliveryOutcome:
        plan = item.aggregate
        assert plan is not None and plan.payload is not None
        payload = plan.payload
        params = {**_AGGREGATE_PARAMS, "importStrategy": item.aggregate_strategy}
        try:
            response = await self.client.post_data_values(payload, params)
        except Dhis2TransportError as exc:
            cause = exc.__cause__
            return classify(cause if isinstance(cause, BaseException) else exc, now=self.clock.now())
        body = _json(response)
        try:
            summary = (
                parse_import_summary(body, payload["dataValues"])
                if response.status_code in (200, 409)
                else None
            )
        except Dhis2Error:
            summary = None
        if summary is None:
            outcome = classify(response, now=self.clock.now())
            if isinstance(outcome, Success) and _cut_short(response):
                return Retry(delay=None, reason="dhis2_answer_cut_short")
            if isinstance(outcome, Success):
                return Permanent(reason="dhis2_unexpected_response", detail="no ImportSummary in the answer")
            return outcome
        outcome = aggregate_outcome(item.job.ref, item.job.resource(), plan, summary, response.status_code, body)
        if item.uncomplete and isinstance(outcome, Success | Partial):
            refused = await self._uncomplete(payload)
            if refused is not None:
                return refused
        sent = self._recorded_request(payload, params, "/api/dataValueSets")
        if isinstance(outcome, Permanent):
            return dataclasses.replace(outcome, request=sent)
        if isinstance(outcome, Partial):
            parts = tuple(dataclasses.replace(part, request=sent) for part in outcome.refused)
            return dataclasses.replace(outcome, refused=parts)
        return outcome
