"""A pulled source's ``pull:`` section: where its API is, how to log in, what to read, how often.

    sources:
      - name: odk
        kind: odk-central
        mapping: odk
        pull:
          base_url: https://central.example.org
          auth: {type: basic, username: gateway@example.org, secret_env: ODK_PASSWORD}
          project: 4
          form: chw_household_visit
          page_size: 250
          interval: 5m

Credentials are named like a destination's (``secret_env`` or ``secret_file``), never written here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.connectors import AuthConfig, Duration
from gateway.delivery import RetryPolicy

__all__ = ["PullOptions", "pull_options"]

#: Tries within one pull: a few quick ones, then the next scheduled run tries again.
PULL_RETRY = RetryPolicy(initial_delay=1.0, multiplier=2.0, max_delay=60.0, max_attempts=6, max_age=None)

#: The CouchDB documents of a CHT instance that are records (tasks, targets, forms, settings are not).
CHT_RECORD_TYPES = ("data_record", "person", "contact", "clinic", "health_center", "district_hospital")
#: The form namespace of the referral outcomes the shipped commcare outbound mapping writes back.
REFERRAL_OUTCOME_XMLNS = "http://commcarehq.org/chw-gateway/referral-outcome"

_REQUIRED = {
    "odk-central": ("project", "form"),
    "commcare-api": ("domain",),
    "cht-changes": (),
    "kobo-api": ("asset",),
}


class PullOptions(BaseModel):
    """How to read one pulled source (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(description="the API's root, e.g. https://central.example.org")
    auth: AuthConfig | None = None
    interval: Duration = Field(300.0, description="how often the scheduler pulls (e.g. 5m)")
    page_size: int = Field(250, ge=1, le=5000, description="records asked for per request")
    timeout: Duration = Field(60.0, description="seconds one request may take")
    retry: RetryPolicy = Field(PULL_RETRY, description="back-off on 429, 5xx and network errors within one pull")
    # odk-central
    project: int | None = Field(None, ge=1, description="ODK Central project id")
    form: str | None = Field(None, description="ODK Central xmlFormId")
    # commcare-api
    domain: str | None = Field(None, description="CommCare project space")
    endpoint: Literal["form", "case"] = Field("form", description="CommCare Form API v1 or Case API v2")
    case_type: str | None = Field(None, description="CommCare Case API: only cases of this type")
    skip_xmlns: tuple[str, ...] = Field(
        (REFERRAL_OUTCOME_XMLNS,),
        description="CommCare Form API: forms passed over (the gateway's own referral outcomes, written back)",
    )
    # cht-changes
    database: str = Field("medic", description="CHT CouchDB database")
    doc_types: tuple[str, ...] = Field(CHT_RECORD_TYPES, description="CHT: the document types that are records")
    skip_forms: tuple[str, ...] = Field(
        ("referral_outcome",), description="CHT: report forms passed over (the gateway's own referral outcomes)"
    )
    # kobo-api
    asset: str | None = Field(None, description="KoboToolbox asset uid")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")


def pull_options(kind: str, section: dict[str, object]) -> PullOptions:
    """The validated ``pull:`` section of a source of ``kind`` (ValueError naming a missing field)."""
    options = PullOptions.model_validate(section)
    missing = [name for name in _REQUIRED[kind] if getattr(options, name) is None]
    if missing:
        raise ValueError(f"kind {kind} needs pull.{', pull.'.join(missing)}")
    return options
