"""A ``client-registry`` destination's ``options``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ClientRegistryOptions(BaseModel):
    """What the connector does with each Patient, and under which systems ids travel."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["register", "lookup"] = Field(
        "register",
        description="register: submit every Patient and read back its CRUID; lookup: only ask the registry"
        " who the Patient is ($match / PDQm search), registering nothing",
    )
    national_id_system: str | None = Field(
        None, description="system of the national identifier written back (default: <base_url>/Patient)"
    )
    source_system: str = Field(
        "urn:chw-gateway:patient",
        description="system under which the gateway's Patient id is sent (the conditional create's key)",
    )
    lookup: tuple[Literal["identifier", "match"], ...] = Field(
        ("identifier", "match"), min_length=1, description="lookup mode: what to ask, in order"
    )
    lookup_identifier_systems: tuple[str, ...] = Field(
        (), description="lookup by identifier (PDQm): the Patient's identifier systems the registry knows"
    )
    write_back: bool = Field(True, description="write the national identifier back onto the gateway's Patient")
