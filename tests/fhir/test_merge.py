"""``merged_elements``: what a merging rule's resource keeps of the stored version."""

from __future__ import annotations

from gateway.fhir.merge import merged_elements

STORED = {
    "resourceType": "Patient", "id": "p1", "meta": {"source": "urn:a"},
    "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Grace</div>"},
    "name": [{"family": "Atieno"}], "telecom": [{"system": "phone", "value": "0700"}],
    "birthDate": "1990", "_birthDate": {"extension": [{"url": "http://x.org/estimated", "valueBoolean": True}]},
    "multipleBirthInteger": 2, "gender": "female",
}  # fmt: skip


def test_left_out_elements_are_kept_and_made_ones_replace_whole() -> None:
    made = {"resourceType": "Patient", "id": "p1", "meta": {"source": "urn:b"},
            "telecom": [{"system": "phone", "value": "0711"}], "birthDate": "1990-04-02"}
    out = merged_elements(STORED, made)
    assert out["name"] == STORED["name"] and out["gender"] == "female"
    assert out["telecom"] == made["telecom"]  # a list is replaced, not appended to
    assert out["meta"] == {"source": "urn:b"}
    # The old value's extensions and the narrative of the old content go.
    assert out["birthDate"] == "1990-04-02" and "_birthDate" not in out and "text" not in out


def test_a_choice_element_keeps_one_type() -> None:
    out = merged_elements(STORED, {"resourceType": "Patient", "id": "p1", "multipleBirthBoolean": False})
    assert out["multipleBirthBoolean"] is False and "multipleBirthInteger" not in out
    assert out["_birthDate"] == STORED["_birthDate"]  # kept with the birthDate it extends
