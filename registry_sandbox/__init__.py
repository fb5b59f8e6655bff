"""A stand-in for a national client registry: OpenCR's FHIR API for Patients.

Written from OpenCR's documentation and the FHIR R4 ``Patient/$match`` operation, to judge the
gateway's ``client-registry`` connector: it imports nothing from ``gateway`` (an import-linter
contract), so it shares no mistake with it. What it does, as OpenCR does:

* ``POST /fhir/Patient`` stores the submitted record, matches it against the ones it holds
  (same identifier of a matching system, or same folded name and birth date), and links it
  to a golden record: a new one (a new CRUID) or the golden record of its match. The stored
  record gets ``link: [{other: Patient/<CRUID>, type: refer}]``, the golden record a
  ``seealso`` link to every record of the person; the answer (201) carries ``Location`` and
  OpenCR's ``locationCRUID`` header. ``If-None-Exist`` makes it a conditional create (200 with
  the existing record when one has that identifier). A record whose ``link`` names a Patient the
  registry does not hold is refused (400), as HAPI FHIR's referential integrity on write does.
* ``GET /fhir/Patient/{id}``, ``PUT /fhir/Patient/{id}``, ``GET /fhir/Patient?identifier=``
  (PDQm), ``POST /fhir/Patient/$match`` (a searchset of golden records with ``search.score``
  and the ``match-grade`` extension).
* Basic or bearer auth; ``fail_next`` answers the next requests with an error, before or
  after doing the work (a lost answer).

    registry = ClientRegistry(token="cr-token")
    app = registry.app()     # serve with uvicorn, or httpx.ASGITransport(app)
"""

from registry_sandbox.app import ClientRegistry, Fault

__all__ = ["ClientRegistry", "Fault"]
