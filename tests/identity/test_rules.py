"""The identity rule file: the shipped one loads; a broken one is refused naming file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.identity import IdentityRuleError, load_rules
from gateway.services import Services
from gateway.settings import Settings
from tests.ingest.conftest import MAPPINGS

SHIPPED = MAPPINGS / "identity" / "rules.yaml"


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    text = SHIPPED.read_text()
    assert old in text
    path = tmp_path / "identity" / "rules.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace(old, new, 1))
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_the_shipped_rule_file_loads() -> None:
    rules = load_rules(SHIPPED)
    assert rules.thresholds.link > rules.thresholds.review
    assert rules.fields["birthdate"]["exact"].weight > 0 > rules.fields["birthdate"]["different"].weight


def test_a_probability_out_of_range_is_refused_with_file_and_line(tmp_path: Path) -> None:
    path = _broken(tmp_path, "exact: {m: 0.75, u: 0.002}", "exact: {m: 1.75, u: 0.002}")
    with pytest.raises(IdentityRuleError) as caught:
        load_rules(path)
    assert f"{path}:{_line_of(path, 'm: 1.75')}: fields.birthdate.exact.m:" in str(caught.value)


def test_a_misspelt_key_and_a_missing_level_are_refused(tmp_path: Path) -> None:
    path = _broken(tmp_path, "  review: 10", "  reveiw: 10")
    with pytest.raises(IdentityRuleError) as caught:
        load_rules(path)
    assert f"{path}:{_line_of(path, 'reveiw')}: thresholds.reveiw: unknown field" in str(caught.value)
    path = _broken(tmp_path, "    day_month_swapped: {m: 0.04, u: 0.0005}\n", "")
    with pytest.raises(IdentityRuleError, match=r"rules\.yaml:\d+: fields: .*missing day_month_swapped"):
        load_rules(path)


def test_broken_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    path = _broken(tmp_path, "  link: 16", "  link: [16")
    with pytest.raises(IdentityRuleError, match=rf"{path}:\d+: invalid YAML"):
        load_rules(path)


def test_the_gateway_does_not_start_on_a_broken_rule_file(tmp_path: Path) -> None:
    path = _broken(tmp_path, "  link: 16", "  link: high")
    settings = Settings(store_url=f"sqlite:///{tmp_path}/g.db", identity={"enabled": True, "rules_dir": path.parent})
    with pytest.raises(IdentityRuleError, match=rf"{path}:{_line_of(path, 'link: high')}: thresholds.link"):
        Services.build(settings)
    with pytest.raises(IdentityRuleError, match="needs a rule file"):
        Services.build(Settings(store_url=f"sqlite:///{tmp_path}/g.db",
                                identity={"enabled": True, "rules_dir": tmp_path / "none"}))
