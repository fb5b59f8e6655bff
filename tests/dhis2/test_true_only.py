"""A TRUE_ONLY data element holds "true" or nothing: a false reading (a question answered no) is
sent as no value (cleared), not as a value DHIS2 would refuse (E1302) with the whole visit."""

from __future__ import annotations

from pathlib import Path

import httpx

from dhis2_sandbox import DEFAULT_TOKEN, SandboxServer
from gateway.clock import SystemClock
from gateway.connectors.base import Success
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.config import Dhis2Options
from gateway.connectors.dhis2.connector import Dhis2Connector
from gateway.connectors.dhis2.sources import ResourceBundle
from tests.dhis2.conftest import MAPPINGS, make_job, pat_auth
from tests.dhis2.records import chw_record, places
from tests.sandbox.conftest import Demo

AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}
ORS_RULE = """      - data_element: code:CHW_ORS_ZINC
        source: MedicationDispense
        code: ["urn:chw-gateway:CodeSystem:medicines|ors-zinc"]
        present: "true"
"""
# The fever question's yes/no answer, read into the TRUE_ONLY element instead.
FEVER_AS_TRUE_ONLY = """      - data_element: code:CHW_ORS_ZINC
        code: ["http://snomed.info/sct|386661006"]
        value: "valueBoolean"
"""


async def test_a_false_reading_of_a_true_only_element_is_no_value(
    sandbox: SandboxServer, demo: Demo, tmp_path: Path
) -> None:
    shipped = (MAPPINGS / "dhis2" / "chw-household-visit.yaml").read_text()
    assert ORS_RULE in shipped
    mapping = tmp_path / "true-only.yaml"
    mapping.write_text(shipped.replace(ORS_RULE, FEVER_AS_TRUE_ONLY))
    for beside in (MAPPINGS / "dhis2").glob("*.yaml"):  # the files it names (org-units.yaml, ...)
        if beside.name != "chw-household-visit.yaml":
            (tmp_path / beside.name).write_text(beside.read_text())
    options = Dhis2Options(mapping=mapping, uid_namespace="true-only")
    values: dict[str, dict[str, str]] = {}
    for fever in (True, False):
        resources = places() + chw_record(1, fever=fever)
        conn = Dhis2Connector(Dhis2Client(sandbox.base_url, auth=pat_auth()), options, ResourceBundle(resources),
                              SystemClock(), mappings_root=MAPPINGS)
        try:
            (outcome,) = await conn.deliver([make_job(resources[3])])
        finally:
            await conn.aclose()
        assert isinstance(outcome, Success), outcome
        async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH) as client:
            (event,) = (await client.get("/api/tracker/events")).json()["events"]
        values[str(fever)] = {v["dataElement"]: v["value"] for v in event["dataValues"]}
    assert values["True"][demo.de("CHW_ORS_ZINC")] == "true"
    assert demo.de("CHW_ORS_ZINC") not in values["False"]  # cleared, and the visit's other values went
    assert values["False"][demo.de("CHW_VISIT_TYPE")] == "ROUTINE"
