"""The metadata cache against the sandbox over HTTP, and ``gateway dhis2 metadata pull``."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dhis2_sandbox import SandboxServer
from gateway.cli.dhis2 import dhis2_app, resolve_destination
from gateway.connectors import Credentials
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.metadata import FIELDS, MetadataCache, MetadataSnapshot
from tests.dhis2.conftest import TOKEN
from tests.sandbox.conftest import Demo


def pat_client(server: SandboxServer) -> Dhis2Client:
    from pydantic import SecretStr

    from gateway.connectors import AuthConfig

    auth = Credentials(AuthConfig(type="api_token", secret_env="X"), SecretStr(TOKEN)).httpx_auth()
    return Dhis2Client(server.base_url, auth=auth)


async def test_pull_pages_everything_and_indexes_it(
    sandbox: SandboxServer, demo: Demo, tmp_path: Path
) -> None:
    client = pat_client(sandbox)
    seen: list[tuple[str, int, int]] = []
    cache = MetadataCache(tmp_path / "meta.json", max_age=timedelta(hours=1))
    assert cache.stale()
    try:
        snapshot = await cache.refresh(client, progress=lambda *args: seen.append(args))
    finally:
        await client.aclose()
    assert set(snapshot.collections) == set(FIELDS)
    assert len(snapshot.collections["dataElements"]) == 22 and snapshot.version == "2.41.0"
    assert {name for name, _, _ in seen} == set(FIELDS)
    assert snapshot.stage_elements(demo.visit_stage)[demo.de("CHW_VISIT_TYPE")] is True
    assert snapshot.option_codes(snapshot.option_set_of("dataElements", demo.de("CHW_RDT_RESULT")) or "") == {
        "POSITIVE",
        "NEGATIVE",
        "INVALID",
        "NOT_DONE",
    }
    assert snapshot.program_attributes(demo.program)[demo.tea("CHW_CLIENT_ID")] is True
    assert snapshot.tet_attributes(demo.person)[demo.tea("CHW_CLIENT_ID")] is True
    assert demo.ou("CU_KISIWA") in snapshot.program_org_units(demo.program)
    assert snapshot.category_option_combos(demo.de("CHW_M_REFERRALS")) == {
        demo.coc("AGE_U5"),
        demo.coc("AGE_5PLUS"),
    }
    assert snapshot.default_category_option_combo() == demo.coc("default")
    assert demo.de("CHW_M_MUAC_LT115") in snapshot.data_set_elements(demo.data_set)
    assert not cache.stale()
    reloaded = MetadataCache(tmp_path / "meta.json")
    assert reloaded.snapshot is not None and reloaded.snapshot.collections == snapshot.collections
    assert reloaded.stale(datetime.now(UTC) + timedelta(days=2))


def test_the_stored_file_is_stable(tmp_path: Path) -> None:
    snapshot = MetadataSnapshot("http://x", "2.41.0", datetime(2024, 1, 1, tzinfo=UTC), {"dataSets": []})
    snapshot.save(tmp_path / "a.json")
    again = MetadataSnapshot.load(tmp_path / "a.json")
    again.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_cli_pull_with_a_token_file(sandbox: SandboxServer, tmp_path: Path) -> None:
    token = tmp_path / "pat.txt"
    token.write_text(TOKEN + "\n")
    out = tmp_path / "cache" / "meta.json"
    result = CliRunner().invoke(
        dhis2_app,
        [
            "metadata",
            "pull",
            sandbox.base_url,
            "--token-file",
            str(token),
            "--out",
            str(out),
            "--page-size",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "22 dataElements" in result.output and TOKEN not in result.output
    assert len(MetadataSnapshot.load(out).collections["organisationUnits"]) == 9
    refused = CliRunner().invoke(dhis2_app, ["metadata", "pull", sandbox.base_url, "--out", str(out)])
    assert refused.exit_code == 1 and "401" in refused.output


def test_destinations_resolve_by_name(tmp_path: Path) -> None:
    from gateway.delivery.config import DestinationConfig

    destination = DestinationConfig.model_validate(
        {
            "name": "moh",
            "kind": "dhis2",
            "base_url": "https://dhis2.example.org",
            "auth": {"type": "api_token", "secret_env": "MOH_PAT"},
            "options": {"metadata_cache": str(tmp_path / "moh.json")},
        }
    )

    class Settings:
        destinations = [destination]

    base, auth, cache = resolve_destination("moh", Settings(), {"MOH_PAT": TOKEN})
    assert (base, cache) == ("https://dhis2.example.org", tmp_path / "moh.json") and auth is not None
    with pytest.raises(Exception, match="no DHIS2 destination"):
        resolve_destination("other", Settings(), {})


def test_check_mappings_command(sandbox: SandboxServer, tmp_path: Path) -> None:
    token = tmp_path / "pat.txt"
    token.write_text(TOKEN)
    mappings = Path(__file__).resolve().parents[2] / "mappings"
    ok = CliRunner().invoke(
        dhis2_app,
        ["check-mappings", sandbox.base_url, "--token-file", str(token), "--mappings", str(mappings)],
    )
    assert ok.exit_code == 0, ok.output
    assert "3 DHIS2 mapping file(s) checked" in ok.output and "0 problem(s)" in ok.output
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (mappings / "dhis2" / "chw-household-visit.yaml")
        .read_text()
        .replace("code:CHW_TEMP_C", "code:NOPE")
        .replace("org_units: org-units.yaml", f"org_units: {mappings / 'dhis2' / 'org-units.yaml'}")
    )
    bad = CliRunner().invoke(
        dhis2_app,
        [
            "check-mappings",
            sandbox.base_url,
            str(broken),
            "--token-file",
            str(token),
            "--mappings",
            str(mappings),
        ],
    )
    assert bad.exit_code == 1 and "code:NOPE does not exist in DHIS2" in bad.output


def test_check_mappings_reads_the_configured_mappings_dir(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15, finding 6: ``-c CONFIG`` used to be ignored for the folder (./mappings was read)."""
    shutil.copytree(Path(__file__).resolve().parents[2] / "mappings", tmp_path / "district")
    visit = tmp_path / "district" / "dhis2" / "chw-household-visit.yaml"
    visit.write_text(visit.read_text().replace("code:CHW_TEMP_C", "code:NOPE"))
    config = tmp_path / "gateway.yaml"
    config.write_text(f"mappings_dir: {tmp_path / 'district'}\n")
    token = tmp_path / "pat.txt"
    token.write_text(TOKEN)
    monkeypatch.chdir(tmp_path)  # no ./mappings here: only the configured folder has mappings
    args = ["check-mappings", sandbox.base_url, "--token-file", str(token), "-c", str(config)]
    result = CliRunner().invoke(dhis2_app, args)
    assert result.exit_code == 1, result.output
    assert "3 DHIS2 mapping file(s) checked" in result.output
    assert f"{visit}:" in result.output and "code:NOPE does not exist in DHIS2" in result.output
    # --mappings still names another folder.
    shipped = Path(__file__).resolve().parents[2] / "mappings"
    ok = CliRunner().invoke(dhis2_app, [*args, "--mappings", str(shipped)])
    assert ok.exit_code == 0 and "0 problem(s)" in ok.output, ok.output
