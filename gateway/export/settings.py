"""The ``bulk_export`` settings section."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class BulkExportSettings(BaseModel):
    """FHIR Bulk Data export (``$export``): where files go, how long they stay, how many jobs run."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    directory: Path = Field(Path("var/exports"), description="where the NDJSON files are written (one folder a job)")
    retention_hours: float = Field(24.0, gt=0, le=24 * 365, description="files and jobs are removed this long after")
    max_concurrent_jobs: int = Field(2, ge=1, le=64, description="exports running at once; more wait their turn")
    max_queued_jobs: int = Field(20, ge=0, le=1000, description="exports waiting at most; more are refused (429)")
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=4096, description="an NDJSON file is split past this size")
    max_file_resources: int = Field(100_000, ge=1, description="... or past this many resources")
    page_size: int = Field(1000, ge=10, le=10_000, description="rows read from the store at once")
    stale_seconds: float = Field(
        120.0, gt=0, description="a running job whose heartbeat is older than this has died (e.g. a restart)"
    )
    deidentify_key: SecretStr | None = Field(
        None,
        description="Secret (32+ characters) keying pseudonyms and date shifts of de-identified exports;"
        " without it `_deidentify` is refused. Keep it: the same key gives the same pseudonyms",
    )
    profiles: dict[str, Path] = Field(
        {}, description="extra de-identification profiles (name -> YAML rule file); `research` is built in"
    )

    @field_validator("deidentify_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value
