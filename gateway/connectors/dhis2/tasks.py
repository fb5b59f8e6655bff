"""The periodic tasks of one DHIS2 destination, for ``gateway.scheduler``.

=====================  ================================================================  ==========
task                   what it does                                                      default
=====================  ================================================================  ==========
``<name>/metadata``    fetch DHIS2 metadata; store it in ``metadata_cache``; rebind the  every 24h
                       connector's mappings when the connector runs in this process
``<name>/org-units``   DHIS2 org units → FHIR Location + Organization (mCSD), writing    every 24h,
                       only what changed                                                 and at start
``<name>/report``      the aggregate report of the last closed period(s) per org unit,   every 24h,
                       stored as MeasureReports; changed ones are queued for delivery    and at start
                       by the outbox (``reporting``)                                     (needs
                                                                                         ``report``)
=====================  ================================================================  ==========

Intervals come from ``options.schedule`` (``Dhis2Schedule``). Every task is idempotent:
deterministic ids (``dhis2-ou-<uid>``, MeasureReports per measure/org unit/period) and
writes skipped when nothing changed, so the same task run by ``gateway serve`` and a
``gateway worker`` at the same moment does the work twice but changes the store once.
The tasks use their own DHIS2 client (the destination's credentials), closed by ``aclose``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import anyio.to_thread

from gateway.clock import Clock
from gateway.connectors.config import Destination, resolve_credentials
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.config import Dhis2Options, default_timeout
from gateway.connectors.dhis2.connector import Dhis2Connector
from gateway.connectors.dhis2.mapping_load import load_aggregate, load_tables
from gateway.connectors.dhis2.mcsd import pull_org_units
from gateway.connectors.dhis2.measure import load_measure
from gateway.connectors.dhis2.metadata import MetadataSnapshot, pull_metadata
from gateway.connectors.dhis2.reporting import periods_to_report, write_reports
from gateway.mapping import LoadIssue, MappingLoadError
from gateway.scheduler import PeriodicTask
from gateway.store import ResourceStore

__all__ = ["Dhis2Tasks", "dhis2_tasks"]


class Dhis2Tasks:
    """The periodic work of one ``kind: dhis2`` destination (see the module docstring)."""

    def __init__(
        self,
        destination: Destination,
        client: Dhis2Client,
        store: ResourceStore,
        clock: Clock,
        *,
        connector: Dhis2Connector | None = None,
    ) -> None:
        self.destination = destination
        self.options = Dhis2Options.model_validate(destination.options)
        self.client = client
        self.store = store
        self.clock = clock
        self.connector = connector

    def periodic(self) -> list[PeriodicTask]:
        """The tasks whose interval is set (and, for the report, whose ``report`` is configured)."""
        schedule, name = self.options.schedule, self.destination.name
        found: list[PeriodicTask] = []
        # Fetched metadata is kept by an in-process connector or the cache file; with neither,
        # a refresh would be thrown away.
        if schedule.metadata_refresh and (self.connector is not None or self.options.metadata_cache):
            found.append(PeriodicTask(f"{name}/metadata", schedule.metadata_refresh, self.refresh_metadata))
        if schedule.org_units_pull:
            found.append(
                PeriodicTask(f"{name}/org-units", schedule.org_units_pull, self.pull_org_units, run_at_start=True,
                             cluster_once=True)
            )
        if schedule.monthly_report and self.options.report and self.options.aggregate_mapping:
            found.append(
                PeriodicTask(
                    f"{name}/report", schedule.monthly_report, self.report, run_at_start=True, cluster_once=True
                )
            )
        return [
            PeriodicTask(t.name, t.interval, t.run, offset=schedule.offset, run_at_start=t.run_at_start,
                         cluster_once=t.cluster_once)
            for t in found
        ]

    async def aclose(self) -> None:
        """Close the tasks' DHIS2 client."""
        await self.client.aclose()

    # -- the tasks

    async def refresh_metadata(self) -> str:
        """Fetch metadata; keep it for the connector (rebinding it here) and the cache file."""
        snapshot = await pull_metadata(self.client)
        count = sum(len(objects) for objects in snapshot.collections.values())
        note = ""
        if self.connector is not None:
            note = "; mappings rebound" if self.connector.use_metadata(snapshot) else "; mappings NO LONGER FIT"
        elif self.options.metadata_cache is not None:
            snapshot.save(self.options.metadata_cache)
        return f"{count} metadata objects from DHIS2 {snapshot.version}{note}"

    async def pull_org_units(self) -> str:
        """DHIS2 org units → Location + Organization in the store."""
        units, written = await pull_org_units(self.client, self.store)
        return f"{units} org units, {written} Location/Organization resources written"

    async def report(self) -> str:
        """Compute and store the aggregate report for the periods to report."""
        report, path = self.options.report, self.options.aggregate_mapping
        assert report is not None and path is not None
        definition = load_measure(report.measure)
        snapshot = await self._snapshot()
        issues: list[LoadIssue] = []
        tables = load_tables(_mappings_root(path), issues)
        if issues:
            raise MappingLoadError(issues)
        aggregate = load_aggregate(path, snapshot, tables)
        today = datetime.fromtimestamp(self.clock.now(), UTC).date()
        periods = periods_to_report(
            aggregate.period_type, today, past=report.past_periods, current=report.current_period
        )
        runs = [
            await anyio.to_thread.run_sync(write_reports, self.store, definition, aggregate, period)
            for period in periods
        ]
        return "; ".join(str(run) for run in runs) or "no period to report"

    async def _snapshot(self) -> MetadataSnapshot:
        """The metadata the connector is bound to, else the cache file, else fetched now."""
        if self.connector is not None and self.connector.snapshot is not None:
            return self.connector.snapshot
        cache = self.options.metadata_cache
        if cache is not None and cache.exists():
            return MetadataSnapshot.load(cache)
        snapshot = await pull_metadata(self.client)
        if cache is not None:
            snapshot.save(cache)
        return snapshot


def _mappings_root(mapping: Path) -> Path:
    """The mappings folder of a DHIS2 mapping file (``mappings/dhis2/x.yaml`` → ``mappings``)."""
    return mapping.parent.parent


def dhis2_tasks(
    destination: Destination,
    *,
    store: ResourceStore,
    environ: Mapping[str, str],
    clock: Clock,
    connector: object = None,
) -> Dhis2Tasks:
    """The tasks of ``destination``, with a DHIS2 client using its credentials (read from ``environ``)."""
    auth = resolve_credentials(destination.auth, environ).httpx_auth() if destination.auth else None
    client = Dhis2Client(destination.base_url, auth=auth, timeout=default_timeout(max(destination.timeout, 60.0)))
    in_process = connector if isinstance(connector, Dhis2Connector) else None
    return Dhis2Tasks(destination, client, store, clock, connector=in_process)
