"""Destination configuration: credentials, filters, validation."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from gateway.connectors import AuthConfig, DeliveryConfigError, resolve_credentials
from gateway.delivery.config import DeliverySettings, DestinationConfig, SubscriptionFilter
from gateway.delivery.policy import RetryPolicy

SECRET = "d2pat_0123456789abcdefSECRET"


def authorization(auth: httpx.Auth) -> str | None:
    request = httpx.Request("GET", "https://example.org/")
    flow = auth.sync_auth_flow(request)
    value: str | None = next(flow).headers.get("authorization")
    return value


def test_bearer_token_from_the_environment_mapping() -> None:
    credentials = resolve_credentials(
        AuthConfig(type="bearer", secret_env="SHR_TOKEN"), {"SHR_TOKEN": SECRET}
    )
    assert authorization(credentials.httpx_auth()) == f"Bearer {SECRET}"
    assert SECRET not in repr(credentials) and SECRET not in str(credentials.secret)


def test_basic_auth_password_from_a_secret_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET + "\n")
    auth = AuthConfig(type="basic", username="admin", secret_file=secret_file)
    header = authorization(resolve_credentials(auth, {}).httpx_auth())
    assert header is not None and header.startswith("Basic ")


def test_api_token_header_and_scheme() -> None:
    auth = AuthConfig(type="api_token", secret_env="T")
    assert authorization(resolve_credentials(auth, {"T": SECRET}).httpx_auth()) == f"ApiToken {SECRET}"
    custom = AuthConfig(type="api_token", secret_env="T", header="X-API-Key", scheme="")
    request = next(
        resolve_credentials(custom, {"T": SECRET})
        .httpx_auth()
        .sync_auth_flow(httpx.Request("GET", "https://x/"))
    )
    assert request.headers["x-api-key"] == SECRET


def test_missing_secrets_are_reported_without_values(tmp_path: Path) -> None:
    with pytest.raises(DeliveryConfigError, match="SHR_TOKEN is not set"):
        resolve_credentials(AuthConfig(type="bearer", secret_env="SHR_TOKEN"), {"OTHER": SECRET})
    with pytest.raises(DeliveryConfigError, match="cannot read secret file"):
        resolve_credentials(AuthConfig(type="bearer", secret_file=tmp_path / "nope"), {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(DeliveryConfigError, match="is empty"):
        resolve_credentials(AuthConfig(type="bearer", secret_file=tmp_path / "empty"), {})


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "bearer"},
        {"type": "bearer", "secret_env": "A", "secret_file": "/x"},
        {"type": "basic", "secret_env": "A"},
        {"type": "oauth", "secret_env": "A"},
    ],
)
def test_invalid_auth_configs(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AuthConfig.model_validate(fields)


def test_filter_by_type_and_source() -> None:
    only = SubscriptionFilter(resource_types=("Patient",), sources=("commcare-main",))
    assert only.matches("Patient", "https://commcare.example.org/a/commcare-main", {})
    assert only.matches("Patient", "commcare-main", {})
    assert not only.matches("Observation", "commcare-main", {})
    assert not only.matches("Patient", "cht", {})
    assert not only.matches("Patient", None, {})
    assert SubscriptionFilter().matches("Anything", None, {})


def test_filter_by_fhirpath_criteria() -> None:
    final_only = SubscriptionFilter(criteria="Observation.status = 'final'")
    assert final_only.matches("Observation", None, {"resourceType": "Observation", "status": "final"})
    assert not final_only.matches(
        "Observation", None, {"resourceType": "Observation", "status": "preliminary"}
    )
    assert not final_only.matches("Patient", None, {"resourceType": "Patient"})


def test_invalid_fhirpath_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="invalid FHIRPath"):
        SubscriptionFilter(criteria="status = ")


@pytest.mark.parametrize(
    ("criteria", "reason"),
    [
        ("a..b", "syntax error at column 3"),  # fhirpathpy alone accepted it and matched nothing
        ("(Observation.status", "syntax error at column 20"),
        ("Observation.status 'final'", "unexpected text after the expression"),
        ("Observation.code.coding.where(system = 'x'", "syntax error"),
        ("Observation.nosuchfunction()", "unknown FHIRPath function nosuchfunction()"),
    ],
)
def test_criteria_pass_the_fhirpath_syntax_check(criteria: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DestinationConfig.model_validate(
            {"name": "x", "kind": "fhir", "base_url": "https://x", "filter": {"criteria": criteria}}
        )
    [error] = caught.value.errors(include_url=False)
    assert error["loc"] == ("filter", "criteria")
    assert "invalid FHIRPath criteria" in error["msg"] and reason in error["msg"]


def test_valid_criteria_still_match_as_before() -> None:
    either = SubscriptionFilter(criteria="Observation.status = 'final' or Patient.exists()")
    assert either.matches("Patient", None, {"resourceType": "Patient", "id": "p"})
    assert either.matches("Observation", None, {"resourceType": "Observation", "status": "final"})
    assert not either.matches("Observation", None, {"resourceType": "Observation", "status": "amended"})
    coded = SubscriptionFilter(
        criteria="Observation.code.coding.where(system = 'http://loinc.org' and code = '8310-5').exists()"
    )
    loinc = {"system": "http://loinc.org", "code": "8310-5"}
    temperature = {"resourceType": "Observation", "code": {"coding": [loinc]}}
    assert coded.matches("Observation", None, temperature)
    assert not coded.matches("Observation", None, {"resourceType": "Observation", "code": {"coding": []}})


def test_destination_defaults_and_overrides() -> None:
    fhir = DestinationConfig.model_validate(
        {
            "name": "shr",
            "kind": "fhir",
            "base_url": "https://shr.example.org/fhir",
            "auth": {"type": "bearer", "secret_env": "SHR_TOKEN"},
            "filter": {"resource_types": ["Patient"]},
            "retry": {"initial_delay": "1m", "max_age": "7d"},
            "timeout": "10s",
        }
    )
    webhook = DestinationConfig(name="hook", kind="webhook", base_url="http://127.0.0.1:9/hook")
    assert fhir.coalesces and not webhook.coalesces
    settings = DeliverySettings()
    assert settings.retry_for(fhir) == RetryPolicy(initial_delay=60, max_age=7 * 86400)
    assert settings.retry_for(webhook) == settings.retry
    assert fhir.timeout == 10.0


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "bad name", "kind": "fhir", "base_url": "https://x"},
        {"name": "x", "kind": "ftp", "base_url": "https://x"},
        {"name": "x", "kind": "fhir", "base_url": "ftp://x"},
        {"name": "x", "kind": "fhir", "base_url": "https://x", "concurrency": 0},
        {"name": "x", "kind": "fhir", "base_url": "https://x", "password": "oops"},
    ],
)
def test_invalid_destinations(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DestinationConfig.model_validate(fields)


def test_config_errors_never_echo_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    try:
        resolve_credentials(AuthConfig(type="bearer", secret_env="X"), {"Y": SECRET})
    except DeliveryConfigError as exc:
        assert SECRET not in str(exc)
    assert SECRET not in caplog.text
