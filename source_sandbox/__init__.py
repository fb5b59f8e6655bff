"""Stand-ins for the APIs the gateway pulls from: ODK Central's OData feed, CommCare HQ's Form API
v1 and Case API v2, CHT's CouchDB ``_changes`` feed and KoboToolbox's ``/api/v2/assets/{uid}/data/``.

Written from the documented formats (``../shared/sources/README.md``, ODK Central's api.yaml,
CommCare's list-forms/cases-v2 docs, CouchDB's _changes docs, Kobo's API docs) and the shared
samples, to judge the gateway's pull connectors: it imports nothing from ``gateway`` (an
import-linter contract), so it shares no mistake with them. One FastAPI app serves all four, with
what a test needs to change between two pulls (submit, edit, review, delete) and to make the
next requests fail (``fail_next``: 429/5xx with Retry-After, 401/403). The CHT and CommCare
stand-ins also take the writes of the referral return path (CouchDB ``PUT /{db}/{docid}``,
409 on an existing id; CommCare's form receiver, where a repeated ``instanceID`` replaces the
form), and ``lose_next_answer`` processes a write but answers an error (after a delay if asked), as
a lost reply::

    sandbox = SourceSandbox()
    sandbox.odk.submit(4, "chw_household_visit", row)
    app = sandbox.app()          # serve with uvicorn, or httpx.ASGITransport(app)
"""

from source_sandbox.app import Fault, SourceSandbox
from source_sandbox.samples_data import odk_sample_rows

__all__ = ["Fault", "SourceSandbox", "odk_sample_rows"]
