"""DHIS2 destination options (``destinations[].options`` of a ``kind: dhis2`` destination).

    destinations:
      - name: moh-dhis2
        kind: dhis2
        base_url: https://dhis2.example.org
        auth: {type: api_token, secret_env: DHIS2_PAT}      # Authorization: ApiToken d2pat_…
        batch_size: 50
        options:
          mapping: mappings/dhis2/chw-household-visit.yaml
          aggregate_mapping: mappings/dhis2/chw-monthly-report.yaml
          uid_namespace: demo-chw
          async_threshold: 200
          metadata_cache: var/dhis2-moh.json
          write_back_identifiers: true          # Patient gets <base_url>/api/tracker/trackedEntities|<UID>
          schedule: {metadata_refresh: 24h, org_units_pull: 24h, monthly_report: 24h, offset: 2h}
          report: {measure: mappings/dhis2/chw-monthly-measure.yaml, past_periods: 1}

Supported DHIS2 versions: 2.38 and later (``/api/tracker`` with client UIDs), detected
from ``/api/system/info`` before the first delivery. Legacy tracker endpoints are never
used: every supported version has the new tracker API (they are only needed below 2.36).
What differs inside the range, and where it is handled:

=================================================  ==========================================
difference                                         handled by
=================================================  ==========================================
ImportReport ``index`` (≤2.40), ``bundleReport.``  ``reports`` reads only what all share
``status``/``stats`` (≤2.39), ``args`` (≥2.43)
async "job added" ``responseType`` (≤2.40)         ``reports.job_id_of``
tracker request errors 409 (≤2.39) / 400 (≥2.40)   both permanent (``classify``)
aggregate conflicts ``{object, value}`` (≤2.38)    ``aggregate_summary`` traces them by object
vs ``errorCode``/``indexes`` (≥2.39)
bare ImportSummary (async summaries, ≤2.37 style)  ``aggregate_summary`` reads both envelopes
and WebMessage-wrapped 409 (≥2.38)
tracker export ``pager{}`` (≥2.41) vs flat paging  not used: the connector reads no exports;
                                                   metadata lists page with ``pager`` in all
``/api/system/ping`` (≤2.41) vs ``/api/ping``      ``ping_path`` (``gateway dhis2 ping``)
(≥2.42)
=================================================  ==========================================
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from gateway.connectors.config import Duration

__all__ = [
    "MIN_VERSION",
    "Dhis2Options",
    "Dhis2Schedule",
    "ReportOptions",
    "check_version",
    "default_timeout",
    "parse_version",
    "ping_path",
]

MIN_VERSION = (2, 38)
_VERSION = re.compile(r"^(\d+)\.(\d+)")


class Dhis2Schedule(BaseModel):
    """How often ``gateway serve``/``gateway worker`` run this destination's periodic tasks.

    Tasks run at every multiple of their interval since the Unix epoch, plus ``offset``
    (``24h`` with ``offset: 2h``: daily at 02:00 UTC); null or 0 turns a task off.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metadata_refresh: Duration | None = Field(86_400.0, description="re-fetch DHIS2 metadata, rebind mappings")
    org_units_pull: Duration | None = Field(
        86_400.0, description="DHIS2 org units → FHIR Location + Organization (mCSD)"
    )
    monthly_report: Duration | None = Field(
        86_400.0, description="compute and queue the aggregate report (needs report.measure)"
    )
    offset: Duration = Field(0.0, description="seconds after each interval boundary")


class ReportOptions(BaseModel):
    """The aggregate report the scheduler computes from stored FHIR data and queues for delivery."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    measure: Path = Field(description="dhis2-measure file (mappings/dhis2/chw-monthly-measure.yaml)")
    past_periods: int = Field(
        1, ge=0, le=24, description="recompute this many closed periods (late records still count)"
    )
    current_period: bool = Field(False, description="also send the period in progress")


class Dhis2Options(BaseModel):
    """Kind-specific settings of a DHIS2 destination."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mapping: Path | None = Field(None, description="tracker mapping YAML (mappings/dhis2/…)")
    aggregate_mapping: Path | None = Field(None, description="MeasureReport → dataValueSet mapping YAML")
    uid_namespace: str = Field(
        "chw-gateway",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="separates deployments sharing one DHIS2",
    )
    async_threshold: int = Field(200, ge=1, description="tracker payloads with more objects use async=true")
    job_poll_interval: float = Field(0.5, gt=0, le=60, description="first poll delay of an async job (s)")
    job_timeout: float = Field(300.0, gt=0, description="give up waiting for an async job after (s)")
    metadata_cache: Path | None = Field(
        None, description="where `gateway dhis2 metadata pull` stores metadata"
    )
    metadata_max_age: float = Field(86_400.0, gt=0, description="refresh metadata older than this (s)")
    write_back_identifiers: bool = Field(
        True, description="write accepted DHIS2 UIDs back onto the FHIR resources as identifiers"
    )
    tracked_entity_per: Literal["record", "person"] = Field(
        "record",
        description="one tracked entity per source Patient, or per person (the golden record's; needs "
        "identity.enabled, README 'Identity')",
    )
    skip_unchanged: bool = Field(
        True,
        description="send only tracker objects that changed since DHIS2 last accepted them "
        "(digests kept in the delivery queue)",
    )
    schedule: Dhis2Schedule = Dhis2Schedule()
    report: ReportOptions | None = Field(None, description="the scheduled aggregate report (off when null)")
    identifier_system_base: str | None = Field(
        None,
        pattern=r"^(https?|urn):",
        description="identifier systems are <this>/trackedEntities|enrollments|events "
        "(default: <base_url>/api/tracker)",
    )


def parse_version(text: str) -> tuple[int, int]:
    """``"2.41.3"`` (or ``"2.41-SNAPSHOT"``) → ``(2, 41)``."""
    match = _VERSION.match(text.strip())
    if match is None:
        raise ValueError(f"not a DHIS2 version: {text!r}")
    return int(match.group(1)), int(match.group(2))


def check_version(version: tuple[int, int]) -> None:
    """Refuse DHIS2 versions without the ``/api/tracker`` behaviour the connector relies on."""
    if version < MIN_VERSION:
        raise ValueError(f"DHIS2 {version[0]}.{version[1]} is not supported (2.38 or later)")


def ping_path(version: tuple[int, int]) -> str:
    """The unauthenticated liveness endpoint of a DHIS2 version (moved in 2.42)."""
    return "/api/ping" if version >= (2, 42) else "/api/system/ping"


def default_timeout(total: float = 30.0) -> httpx.Timeout:
    """Connect fast, allow a long read: big synchronous imports take time to answer."""
    return httpx.Timeout(connect=min(5.0, total), read=max(total, 5.0), write=total, pool=5.0)


def options_from(raw: dict[str, Any]) -> Dhis2Options:
    """Validate ``destinations[].options``."""
    return Dhis2Options.model_validate(raw)
