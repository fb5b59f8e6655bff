"""De-identification profiles of bulk export: the built-in ``research`` file plus configured ones."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from gateway.errors import ConfigError
from gateway.fhir import DeidentifyRules, RulesError

BUILT_IN = {"research": Path(__file__).parent / "data" / "research.yaml"}


def load_profiles(extra: Mapping[str, Path]) -> dict[str, DeidentifyRules]:
    """Every profile by name (a configured one replaces a built-in one of the same name)."""
    out: dict[str, DeidentifyRules] = {}
    for name, path in {**BUILT_IN, **extra}.items():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the de-identification profile {name!r}: {exc}") from exc
        try:
            rules = DeidentifyRules.from_mapping(data)
        except RulesError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        if rules.name != name:
            raise ConfigError(f"{path}: name: is {rules.name!r}, but the profile is configured as {name!r}")
        out[name] = rules
    return out
