"""SMART's Python fhirclient 4.4.0 getting a Backend Services token from the running gateway.

What fhirclient does itself: it reads the token endpoint from the CapabilityStatement's
``oauth-uris`` extension, and with a ``jwt_token`` setting it posts a
``client_credentials`` request with that assertion and uses the access token it gets.
What it does not do: sign the assertion (the caller passes one in, signed here with
joserfc) or sign a fresh one when the token expires (it has no refresh for this grant).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fhirclient import client as smart_client
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRPermissionDeniedException

from gateway.store import ApiClient, open_store
from tests.support.gateway_app import build_gateway
from tests.support.live_server import LiveServer
from tests.support.smart import assertion, public_jwks, rsa_key


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The root URL of a running gateway where client ``backend`` may read and search patients."""
    gateway = build_gateway(Path(tmp_path_factory.mktemp("smart")))
    store = open_store(gateway.settings.store_url)
    try:
        store.save_client(ApiClient("backend", ("system/Patient.rs", "system/Observation.rs"), datetime.now(UTC),
                                    jwks=public_jwks(rsa_key())), "hash-backend")
    finally:
        store.close()
    with LiveServer(gateway.app) as server:
        yield server.url


def test_fhirclient_gets_a_token_with_a_signed_assertion_and_reads(live: str) -> None:
    token_url = f"{live}/auth/token"
    smart = smart_client.FHIRClient(settings={
        "app_id": "backend",
        "api_base": f"{live}/fhir",
        "scope": "system/Patient.rs",
        "jwt_token": assertion("backend", token_url, datetime.now(UTC).timestamp()),
    })
    smart.wants_patient = False  # else it asks for launch/patient, a scope for apps with a user
    try:
        assert smart.prepare() is False  # metadata read; no token yet
        assert smart.server.auth.auth_type == "oauth2" and smart.server.auth._token_uri == token_url
        smart.authorize()
        assert smart.ready and smart.launch_context["scope"] == "system/Patient.rs"
        bundle = Patient.where(struct={"identifier": f"urn:test:{uuid.uuid4().hex}|x"}).perform(smart.server)
        assert bundle.total == 0
        with pytest.raises(FHIRPermissionDeniedException):  # registered for it, but not requested
            Observation.where(struct={"code": "x"}).perform(smart.server)
    finally:
        smart.server.session.close()
