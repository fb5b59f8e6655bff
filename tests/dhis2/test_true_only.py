"""A TRUE_ONLY data element holds "true" or nothing: a false reading (a question answered no) is
sent as no value (cleared), not as a value DHIS2 would refuse (E1302) with the whole visit."""

from __future__ import annotations

from pathlib import Path

from dhis2_sandbox import SandboxServer
from gateway.connectors.base import Success
from gateway.connectors.dhis2.config import Dhis2Options
from tests.dhis2.conftest import deliver_visit, edited_visit_mapping
from tests.dhis2.records import chw_record, places
from tests.sandbox.conftest import Demo

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
    options = Dhis2Options(mapping=edited_visit_mapping(tmp_path, ORS_RULE, FEVER_AS_TRUE_ONLY),
                           uid_namespace="true-only")
    values: dict[str, dict[str, str]] = {}
    for fever in (True, False):
        outcome, (event,) = await deliver_visit(sandbox.base_url, options, places() + chw_record(1, fever=fever))
        assert isinstance(outcome, Success), outcome
        values[str(fever)] = {v["dataElement"]: v["value"] for v in event["dataValues"]}
    assert values["True"][demo.de("CHW_ORS_ZINC")] == "true"
    assert demo.de("CHW_ORS_ZINC") not in values["False"]  # cleared, and the visit's other values went
    assert values["False"][demo.de("CHW_VISIT_TYPE")] == "ROUTINE"
