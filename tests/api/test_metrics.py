"""``GET /metrics``: what it counts, who may scrape it, no patient data, several processes as one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from gateway.api import admin_delivery
from gateway.api.app import create_app
from gateway.delivery import DeliverySections
from gateway.delivery.config import DeliverySettings, DestinationConfig
from gateway.services import ServicePlan
from gateway.settings import Settings
from gateway.store import Store, open_store
from tests.conftest import make_token
from tests.ingest.conftest import MAPPINGS, Harness, make_app, sample
from tests.support.gateway_app import MACHINE_SPEED_LIMITS

REPO = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def test_ingest_and_fhir_requests_are_counted_without_patient_data(store: Store) -> None:
    app = make_app(store, MAPPINGS)
    async with app.router.lifespan_context(app):
        gw = Harness(app, store, MAPPINGS)
        before = (await gw.admin.get("/metrics")).text
        response = await gw.sender.post("/ingest/kobo", content=sample("kobo", "hypertension-visit"),
                                        headers={"Content-Type": "application/json"})
        assert response.status_code == 200
        written = response.json()["results"][0]["resources"]
        patient = next(w for w in written if w["type"] == "Patient")
        read = await gw.fhir.get(f"/fhir/Patient/{patient['id']}")
        assert read.status_code == 200
        missing = await gw.fhir.get("/fhir/Patient/not-there")
        assert missing.status_code == 404
        scraped = await gw.admin.get("/metrics")
        await gw.aclose()
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    grew = value(text, "gateway_ingest_records_total", source="kobo", outcome="stored") - value(
        before, "gateway_ingest_records_total", source="kobo", outcome="stored"
    )
    assert grew == 1
    assert value(text, "gateway_mapping_seconds_count", source="kobo") >= 1
    assert value(text, "gateway_validation_seconds_count", source="kobo") >= 1
    assert value(text, "gateway_store_write_seconds_count") >= 1
    assert value(text, "gateway_fhir_request_seconds_count", interaction="read", status="2xx") >= 1
    assert value(text, "gateway_fhir_request_seconds_count", interaction="read", status="4xx") >= 1
    # Labels name sources and interactions, never a patient: no id, no name, no value.
    record = orjson.loads(sample("kobo", "hypertension-visit"))
    assert patient["id"] not in text
    names = [v for v in _strings(record) if len(v) > 3]
    assert names and not any(f'"{v}"' in text for v in names)


def _strings(data: object) -> list[str]:
    if isinstance(data, dict):
        return [s for v in data.values() for s in _strings(v)]
    if isinstance(data, list):
        return [s for v in data for s in _strings(v)]
    return [data] if isinstance(data, str) else []


async def test_metrics_need_the_admin_or_metrics_scope_unless_the_settings_open_them(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/s.db")

    def client(app: object, client_ip: str, *scopes: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {make_token(store, scopes)}"} if scopes else {}
        transport = httpx.ASGITransport(app=app, client=(client_ip, 5000))  # type: ignore[arg-type]
        return httpx.AsyncClient(transport=transport, base_url="http://gateway.test", headers=headers)

    async def status(access: str, client_ip: str, *scopes: str) -> int:
        settings = Settings(store_url="sqlite:///unused.db", allowed_hosts=["gateway.test"],
                            rate_limit=MACHINE_SPEED_LIMITS, metrics={"access": access})
        app = create_app(settings, store=store)
        async with app.router.lifespan_context(app), client(app, client_ip, *scopes) as http:
            return (await http.get("/metrics")).status_code

    try:
        assert await status("admin", "127.0.0.1") == 401
        assert await status("admin", "127.0.0.1", "system/*.rs") == 403
        assert await status("admin", "10.1.2.3", "metrics") == 200
        assert await status("admin", "10.1.2.3", "admin") == 200
        assert await status("loopback", "127.0.0.1") == 200  # a Prometheus beside the gateway
        assert await status("loopback", "10.1.2.3") == 401
        assert await status("public", "10.1.2.3") == 200
    finally:
        store.close()


async def test_the_queue_gauges_show_depth_lag_circuit_and_workers_per_destination(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    sections = DeliverySections(
        destinations=(DestinationConfig(name="shr", kind="fhir", base_url="http://127.0.0.1:9/fhir"),),
        delivery=DeliverySettings(in_process_worker=False),
    )
    settings = Settings(store_url="sqlite:///unused.db", queue_url=f"sqlite:///{tmp_path}/q.db",
                        rate_limit=MACHINE_SPEED_LIMITS)
    app = create_app(settings, store=store, plan=ServicePlan(delivery=True, sections=sections))
    app.include_router(admin_delivery.router)
    try:
        async with app.router.lifespan_context(app):
            with store.transaction() as tx:
                for i in range(3):
                    tx.update({"resourceType": "Patient", "id": f"p{i}", "name": [{"family": f"Fam{i}"}]})
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {make_token(store, ('admin',))}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://gw.test", headers=headers) as http:
                text = (await http.get("/metrics")).text
    finally:
        store.close()
    assert value(text, "gateway_queue_depth", destination="shr") == 0
    assert value(text, "gateway_delivery_lag_changes", destination="shr") == 3
    assert value(text, "gateway_delivery_lag_seconds", destination="shr") >= 0
    assert ("gateway_circuit_state", (("destination", "shr"),)) in samples(text)
    assert value(text, "gateway_workers_alive", destination="shr") == 0
    assert "Fam0" not in text and "p0" not in text


RECORD = """
import sys
from pathlib import Path
from gateway.metrics import configure
m = configure(Path(sys.argv[1]))
m.ingest_records.labels("cht", "stored").inc(int(sys.argv[2]))
"""

RENDER = """
import sys
from pathlib import Path
from gateway.metrics import configure, render
configure(Path(sys.argv[1]))
sys.stdout.write(render().decode())
"""


def test_several_processes_are_scraped_as_one_through_the_multiprocess_directory(tmp_path: Path) -> None:
    shared = tmp_path / "prom"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the setting, not an inherited variable, sets it
    for count in ("2", "5"):  # e.g. two uvicorn workers
        subprocess.run([sys.executable, "-c", RECORD, str(shared), count], check=True, env=env, cwd=tmp_path)
    out = subprocess.run([sys.executable, "-c", RENDER, str(shared)], check=True, env=env, cwd=tmp_path,
                         capture_output=True, text=True).stdout
    assert value(out, "gateway_ingest_records_total", source="cht", outcome="stored") == 7


def test_the_metrics_scope_can_be_given_to_a_client_and_grants_nothing_else() -> None:
    from gateway.auth import Principal, validate_scopes

    assert validate_scopes(["metrics"]) == ["metrics"]  # `gateway clients create prometheus --scope metrics`
    scraper = Principal.of("prometheus", ("metrics",))
    assert scraper.has("metrics") and not scraper.has("admin") and not scraper.can("Patient", "r")
