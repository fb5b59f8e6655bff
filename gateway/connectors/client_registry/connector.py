"""``ClientRegistryConnector``: Patients to a national client registry, national ids back.

Per job (only Patients; other resources and deletes succeed without a request — a registry
keeps the people it was told about):

* ``register``: the Patient, without the identifiers written back, goes to the registry
  with the gateway's id as an identifier (``source_system|<id>``) and ``If-None-Exist`` on
  it, so a retry after a lost answer finds the record the first attempt created instead of
  creating a second; an existing record is updated. The record is then read back and the
  CRUID taken from its ``refer`` link.
* ``lookup``: nothing is registered; the registry is asked (``lookup`` order) by the
  Patient's identifiers of ``lookup_identifier_systems`` (PDQm ``Patient?identifier=``)
  and/or ``Patient/$match`` (only certain matches; two or more certain golden records is
  ambiguous and writes nothing). No match is a success with nothing written.

The CRUID is written back onto the gateway's Patient as an identifier of
``national_id_system`` with the DHIS2 connector's write-back (``WriteBack``): only onto the
version delivered, with a Provenance that marks the new version as "registered already", so
the write-back's own version is not sent again and nothing loops. Logs name ids only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import anyio.to_thread

from gateway.clock import Clock
from gateway.connectors.base import DeliveryOutcome, Job, Success
from gateway.connectors.client_registry.config import ClientRegistryOptions
from gateway.connectors.client_registry.exchanges import RegistryApi, cruid_of, not_linked, token
from gateway.connectors.dhis2 import WriteBack, WriteBackTarget
from gateway.store import KEPT_IDENTIFIER_TYPE, is_kept_link

logger = logging.getLogger(__name__)
_VERSION_META = ("versionId", "lastUpdated")


class ClientRegistryConnector:
    """Delivers Patients to one client registry (``gateway.connectors.base.Connector``)."""

    def __init__(self, api: RegistryApi, options: ClientRegistryOptions, writeback: WriteBack | None) -> None:
        self.api = api
        self.options = options
        self.writeback = writeback
        self.system = options.national_id_system or f"{api.base_url}/Patient"

    @property
    def clock(self) -> Clock:
        """The clock outcomes are judged by."""
        return self.api.clock

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.api.client.aclose()

    async def deliver(self, jobs: Sequence[Job]) -> list[DeliveryOutcome]:
        """One exchange (or a few) per job, in order."""
        return [await self._deliver_one(job) for job in jobs]

    async def _deliver_one(self, job: Job) -> DeliveryOutcome:
        if job.resource_type != "Patient" or job.op == "delete":
            return Success(detail="not sent: the registry takes Patients and keeps them")
        if self.writeback is not None:
            held = await anyio.to_thread.run_sync(self.writeback.already_held, job)
            if held is not None:
                if held.restore is not None:
                    await self._write_back(held.restore)
                return Success(detail="registered already")
        patient = self._outgoing(job)
        if self.options.mode == "register":
            cruid, outcome = await self._register(job, patient)
        else:
            cruid, outcome = await self._lookup(patient)
        if cruid is not None and self.writeback is not None:
            await self._write_back(WriteBackTarget("Patient", job.resource_id, job.version, (self._identifier(cruid),)))
        return outcome

    def _outgoing(self, job: Job) -> dict[str, Any]:
        """The Patient as the registry gets it: without our identifiers and version meta, with the source id."""
        resource = job.resource()
        if self.writeback is not None:
            resource = self.writeback.hide(resource)
        meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in _VERSION_META}
        resource = {k: v for k, v in resource.items() if k not in ("meta", "id")}
        if meta:
            resource["meta"] = meta
        own = {"system": self.options.source_system, "value": job.resource_id}
        others = [i for i in resource.get("identifier") or [] if i.get("system") != self.options.source_system]
        # The identity matcher's links name the gateway's golden record and the person's other
        # records: ids the registry does not hold (its HAPI refuses them; one it kept would read
        # as the record's CRUID). The registry links the person itself.
        links = [link for link in resource.pop("link", None) or [] if not is_kept_link(link)]
        if links:
            resource["link"] = links
        return {**resource, "identifier": [*others, own]}

    async def _register(self, job: Job, patient: dict[str, Any]) -> tuple[str | None, DeliveryOutcome]:
        key = token(self.options.source_system, job.resource_id)
        rid, outcome = await self.api.register(patient, key, job.id)
        if rid is None:
            return None, outcome
        record, read = await self.api.read(rid)
        if record is None:
            return None, read
        cruid = cruid_of(record)
        if cruid is None or cruid == rid:
            return None, not_linked()
        return cruid, Success(detail=f"Patient/{rid} -> CRUID {cruid}")

    async def _lookup(self, patient: dict[str, Any]) -> tuple[str | None, DeliveryOutcome]:
        for way in self.options.lookup:
            if way == "identifier":
                wanted = set(self.options.lookup_identifier_systems)
                for ident in patient.get("identifier") or []:
                    if ident.get("system") in wanted and isinstance(ident.get("value"), str):
                        found, outcome = await self.api.search_identifier(ident["system"], ident["value"])
                        if not isinstance(outcome, Success):
                            return None, outcome
                        cruids = {cruid_of(entry["resource"]) for entry in found} - {None}
                        if len(cruids) == 1:
                            cruid = cruids.pop()
                            return cruid, Success(detail=f"CRUID {cruid} (identifier)")
            else:
                found, outcome = await self.api.match(patient)
                if not isinstance(outcome, Success):
                    return None, outcome
                cruids = {cruid_of(entry["resource"]) for entry in found} - {None}
                if len(cruids) == 1:
                    cruid = cruids.pop()
                    return cruid, Success(detail=f"CRUID {cruid} ($match)")
                if len(cruids) > 1:
                    return None, Success(detail=f"ambiguous: {len(cruids)} certain matches, nothing written back")
        return None, Success(detail="no match in the registry")

    def _identifier(self, cruid: str) -> dict[str, Any]:
        # Typed as an identifier the gateway keeps, as DHIS2 UIDs are: a re-ingested source
        # record (which does not know it) neither drops it nor counts as a change.
        kept = {"system": KEPT_IDENTIFIER_TYPE, "code": "national-id", "display": "National client registry id"}
        return {"use": "official", "type": {"coding": [kept]}, "system": self.system, "value": cruid}

    async def _write_back(self, target: WriteBackTarget) -> None:
        """Write the CRUID back; a store failure costs only the identifier (the registry has the data)."""
        assert self.writeback is not None
        writeback = self.writeback
        try:
            await anyio.to_thread.run_sync(lambda: writeback.apply([target], now=self.clock.now()))
        except Exception as exc:  # the store is down or busy: the next change writes it back
            logger.warning("client registry write-back of %s failed: %s", target.ref, type(exc).__name__)
