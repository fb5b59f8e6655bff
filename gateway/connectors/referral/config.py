"""Options of the return-path destinations (``options:`` of a ``cht-api``/``commcare-api`` destination).

    destinations:
      - name: cht-outcomes
        kind: cht-api
        base_url: https://cht.example.org
        auth: {type: basic, username: gateway, secret_env: CHT_PASSWORD}
        options: {mapping: mappings/cht, database: medic}
      - name: commcare-outcomes
        kind: commcare-api
        base_url: https://www.commcarehq.org
        auth: {type: api_token, scheme: ApiKey, secret_env: CC_KEY}
        options: {mapping: mappings/commcare, domain: pih-chw-demo, user_id: 0a1b…, username: gateway}
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gateway.connectors.config import Duration

__all__ = ["RETURN_KINDS", "ReferralSettings", "ReturnOptions"]

RETURN_KINDS = ("cht-api", "commcare-api")


class ReturnOptions(BaseModel):
    """Where the outcome payload comes from and where it goes in the source app."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mapping: Path = Field(description="the source's mapping set folder; its outbound/*.yaml make the payload")
    database: str = Field("medic", pattern=r"^[a-z][a-z0-9_$()+/-]*$", description="CHT: the CouchDB database")
    domain: str | None = Field(None, description="CommCare: the project space")
    app_id: str | None = Field(None, description="CommCare: post to /receiver/{app_id}/ (tags the form)")
    user_id: str = Field("", description="CommCare: the mobile worker the form is submitted as (meta.userID)")
    username: str = Field("chw-gateway", description="CommCare: that worker's username (meta.username)")
    device_id: str = Field("chw-gateway", description="CommCare: meta.deviceID")


class ReferralSettings(BaseModel):
    """The ``referral:`` section: when a referral Task nobody acted on becomes overdue."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    overdue_check: bool = Field(True, description="mark referral Tasks overdue (where the scheduler runs)")
    overdue_after: Duration = Field(
        7 * 86_400.0, gt=0, description="after authoredOn, when the referral gives no follow-up date"
    )
    check_interval: Duration = Field(3_600.0, gt=0, description="how often the scheduler looks for overdue Tasks")
