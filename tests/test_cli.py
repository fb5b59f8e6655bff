"""The command line: exit codes, one-line errors, tokens printed once."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.auth import hash_token
from gateway.cli import app
from gateway.store import ApiClient, open_store

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GATEWAY_STORE_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # away from the checkout's ./gateway.yaml (the dev configuration)
    return tmp_path


def test_clients_create_prints_the_token_last_and_stores_its_hash(env: Path) -> None:
    result = runner.invoke(app, ["clients", "create", "openmrs", "--scope", "system/Patient.rs", "--scope", "admin"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("gw_")
    store = open_store(f"sqlite:///{env}/cli.db")
    try:
        client = store.client_by_token_hash(hash_token(token))
        assert client is not None and client.scopes == ("system/Patient.rs", "admin")
    finally:
        store.close()
    listed = runner.invoke(app, ["clients", "list"])
    assert "openmrs\tsystem/Patient.rs admin" in listed.stdout and token not in listed.stdout


def test_clients_create_takes_a_space_separated_scope_string(env: Path) -> None:
    """As the README's referral loop writes it: one ``--scope`` holding several scopes, SMART-style."""
    scopes = "system/Task.rus system/Encounter.crus  system/Condition.crus"
    result = runner.invoke(app, ["clients", "create", "emr", "--scope", scopes, "--scope", "admin"])
    assert result.exit_code == 0, result.output
    client = _client(env, result.stdout.strip().splitlines()[-1])
    assert client is not None
    assert client.scopes == ("system/Task.rus", "system/Encounter.crus", "system/Condition.crus", "admin")
    refused = runner.invoke(app, ["clients", "create", "emr2", "--scope", "system/Task.rus root"])
    assert refused.exit_code == 2 and "'root'" in refused.stderr


def _client(env: Path, token: str) -> ApiClient | None:
    store = open_store(f"sqlite:///{env}/cli.db")
    try:
        return store.client_by_token_hash(hash_token(token))
    finally:
        store.close()


def test_clients_revoke_and_rotate(env: Path) -> None:
    created = runner.invoke(app, ["clients", "create", "emr", "--scope", "admin", "--expires", "90d"])
    assert created.exit_code == 0, created.output
    old = created.stdout.strip().splitlines()[-1]
    client = _client(env, old)
    assert client is not None and client.expires is not None
    assert timedelta(days=89) < client.expires - datetime.now(UTC) <= timedelta(days=90)

    rotated = runner.invoke(app, ["clients", "rotate", "emr"])
    assert rotated.exit_code == 0, rotated.output
    new = rotated.stdout.strip().splitlines()[-1]
    assert new.startswith("gw_") and new != old
    assert _client(env, old) is None
    kept = _client(env, new)
    assert kept is not None and kept.scopes == ("admin",) and kept.expires == client.expires

    revoked = runner.invoke(app, ["clients", "revoke", "emr"])
    assert revoked.exit_code == 0, revoked.output
    gone = _client(env, new)
    assert gone is not None and gone.revoked is not None
    listed = runner.invoke(app, ["clients", "list"]).stdout
    line = next(line for line in listed.splitlines() if line.startswith("emr\t"))
    assert "\trevoked " in line and f"expires {client.expires:%Y-%m-%d}" in line and "last used -" in line
    assert new not in listed and old not in listed

    for command in ("revoke", "rotate"):
        missing = runner.invoke(app, ["clients", command, "nobody"])
        assert missing.exit_code == 1 and missing.stderr.startswith("gateway: ")
    assert runner.invoke(app, ["clients", "rotate", "emr"]).exit_code == 1  # a revoked client stays revoked


def test_clients_create_takes_an_expiry_date_and_lists_it(env: Path) -> None:
    result = runner.invoke(app, ["clients", "create", "lab", "--scope", "admin", "--expires", "2099-01-01"])
    assert result.exit_code == 0, result.output
    line = runner.invoke(app, ["clients", "list"]).stdout.strip().splitlines()[-1]
    assert line.startswith("lab\tadmin\tcreated ") and "expires 2099-01-01T00:00:00Z\tactive\t" in line
    for bad in ("soon", "2020-01-01"):
        refused = runner.invoke(app, ["clients", "create", "lab2", "--scope", "admin", "--expires", bad])
        assert refused.exit_code == 2 and refused.stderr.count("\n") == 1


@pytest.mark.parametrize("scope", ["system/Patient.xyz", "user/*.rs", "system/Foo.rs", "ingest:", "root"])
def test_bad_scopes_are_refused_with_one_line(env: Path, scope: str) -> None:
    result = runner.invoke(app, ["clients", "create", "x", "--scope", scope])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("gateway: ")


def test_config_check_masks_secrets(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "s3cret-s3cret-s3cret-s3cret")
    monkeypatch.setenv("GATEWAY_QUEUE_URL", "redis://:hunter2@127.0.0.1:6379/0")
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.stdout and "hunter2" not in result.stdout
    data = json.loads(result.stdout)
    assert data["queue_url"] == "redis://:***@127.0.0.1:6379/0"


def test_config_check_masks_the_rate_limit_redis_password(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_RATE_LIMIT__REDIS_URL", "redis://:hunter3@127.0.0.1:6379/2")
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == 0, result.output
    assert "hunter3" not in result.stdout
    limits = json.loads(result.stdout)["rate_limit"]
    assert limits["redis_url"] == "redis://:***@127.0.0.1:6379/2"
    assert (limits["enabled"], limits["requests_per_second"], limits["burst"]) == (True, 1000.0, 5000)


def test_config_check_masks_password_like_query_parameters(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A PostgreSQL URL: a SQLite one takes no option but ?synchronous= (refused as store_url since).
    monkeypatch.setenv("GATEWAY_STORE_URL", "postgresql://gw@db.example.org/gw?schema=s&password=pw-store-1")
    monkeypatch.setenv("GATEWAY_QUEUE_URL", "rediss://127.0.0.1:6379/0?sslpassword=pw-queue-2&ssl_cert_reqs=none")
    config = env / "gateway.yaml"
    config.write_text(
        "destinations:\n"
        "  - {name: shr, kind: fhir, base_url: 'https://shr.example.org/fhir?api_key=pw-dest-3&PWD=pw-dest-4"
        "&client_secret=pw-dest-5&access_token=pw-dest-6&pass=pw-dest-7&tenant=t1'}\n"
    )
    result = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "pw-" not in result.stdout
    data = json.loads(result.stdout)
    assert data["store_url"] == "postgresql://gw@db.example.org/gw?schema=s&password=***"
    assert data["queue_url"] == "rediss://127.0.0.1:6379/0?sslpassword=***&ssl_cert_reqs=none"
    assert data["destinations"][0]["base_url"] == (
        "https://shr.example.org/fhir?api_key=***&PWD=***&client_secret=***&access_token=***&pass=***&tenant=t1"
    )


def test_config_check_masks_a_pulled_sources_base_url(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A pulled source's API root is a URL like a destination's: a password in its userinfo or a
    # token in its query is masked the same way.
    config = env / "gateway.yaml"
    mappings = Path(__file__).resolve().parents[1] / "mappings"
    config.write_text(
        f"mappings_dir: {mappings}\n"
        "sources:\n"
        "  - name: odk\n"
        "    kind: odk-central\n"
        "    mapping: odk\n"
        "    pull: {base_url: 'https://gw:pw-pull-1@central.example.org/?api_token=pw-pull-2&x=1',"
        " project: 4, form: f1}\n"
    )
    result = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "pw-pull" not in result.stdout
    data = json.loads(result.stdout)
    assert data["sources"][0]["pull"]["base_url"] == "https://gw:***@central.example.org/?api_token=***&x=1"


def test_config_check_names_field_file_and_line(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = env / "bad.yaml"
    bad.write_text("port: 8080\nsearch:\n  max_count: 0\n")
    result = runner.invoke(app, ["config", "check", "--config", str(bad)])
    assert result.exit_code == 2
    assert "search.max_count" in result.stderr and str(bad) in result.stderr
    # Every bad setting is named, a line each (it said "(and 1 more)").
    two = env / "two.yaml"
    two.write_text("port: 8080\nsearch:\n  max_count: -5\nbatch_size: fifty\n")
    result = runner.invoke(app, ["config", "check", "--config", str(two)])
    assert result.exit_code == 2
    assert f"{two}:3: search.max_count" in result.stderr and f"{two}:4: batch_size" in result.stderr
    broken = env / "broken.yaml"
    broken.write_text("port: 8080\nhost: [\n")
    result = runner.invoke(app, ["config", "check", "--config", str(broken)])
    assert result.exit_code == 2 and f"{broken}:3" in result.stderr
    monkeypatch.setenv("GATEWAY_PORT", "not-a-port")
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == 2 and "GATEWAY_PORT" in result.stderr


def test_environment_wins_over_the_file(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = env / "c.yaml"
    config.write_text("port: 9000\nhost: 0.0.0.0\n")
    monkeypatch.setenv("GATEWAY_PORT", "9100")
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    data = json.loads(runner.invoke(app, ["config", "check"]).stdout)
    assert data["port"] == 9100 and data["host"] == "0.0.0.0"


def test_config_check_names_a_bad_dhis2_option(env: Path) -> None:
    config = env / "dhis2.yaml"
    config.write_text(
        "destinations:\n"
        "  - name: moh\n    kind: dhis2\n    base_url: https://dhis2.example.org\n"
        "    options:\n      schedule: {org_units_pull: fortnightly}\n"
    )
    result = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2
    assert "destination moh: options.schedule.org_units_pull" in result.stderr and "not a duration" in result.stderr
    config.write_text(config.read_text().replace("fortnightly", "14d"))
    result = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["scheduler"] == {"enabled": True}


DESTINATION_WITH_CRITERIA = (
    "port: 8080\n"
    "destinations:\n"
    "  - name: shr\n"
    "    kind: fhir\n"
    "    base_url: https://shr.example.org/fhir\n"
    "    filter:\n"
    "      resource_types: [Observation]\n"
    "      criteria: {criteria}\n"
)


@pytest.mark.parametrize(
    "criteria", ['"a..b"', '"Observation.status = "', "\"(Observation.status = 'final'\"", '"Observation status"']
)
def test_config_check_refuses_broken_fhirpath_criteria_with_file_and_line(env: Path, criteria: str) -> None:
    config = env / "criteria.yaml"
    config.write_text(DESTINATION_WITH_CRITERIA.format(criteria=criteria))
    result = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"gateway: {config}:8: destinations[0].filter.criteria: invalid FHIRPath")
    assert result.stderr.count("\n") == 1


def test_config_check_accepts_valid_criteria(env: Path) -> None:
    config = env / "criteria.yaml"
    config.write_text(DESTINATION_WITH_CRITERIA.format(criteria="\"Observation.status = 'final'\""))
    result = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["destinations"][0]["filter"]["criteria"] == "Observation.status = 'final'"


def test_broken_criteria_from_the_environment_name_the_setting(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    destinations = [{"name": "shr", "kind": "fhir", "base_url": "https://x", "filter": {"criteria": "a..b"}}]
    monkeypatch.setenv("GATEWAY_DESTINATIONS", json.dumps(destinations))
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == 2
    assert "destinations.0.filter.criteria" in result.stderr and "invalid FHIRPath criteria" in result.stderr
    # The environment wins over the file, so the file (whose criteria are fine) is not blamed.
    config = env / "criteria.yaml"
    config.write_text(DESTINATION_WITH_CRITERIA.format(criteria="\"Observation.status = 'final'\""))
    result = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2 and "destinations.0.filter.criteria" in result.stderr
    assert re.search(rf"{re.escape(str(config))}:\d", result.stderr) is None


SHIPPED_MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"
DHIS2_DESTINATION = (
    "mappings_dir: {mappings}\n"
    "destinations:\n"
    "  - name: moh\n"
    "    kind: dhis2\n"
    "    base_url: https://dhis2.example.org\n"
    "    options:\n"
    "      mapping: {mapping}\n"
    "      aggregate_mapping: {mappings}/dhis2/chw-monthly-report.yaml\n"
)


def test_config_check_refuses_a_dhis2_mapping_file_that_does_not_exist(env: Path) -> None:
    """Issue 15, finding 6: the missing file used to pass the check and fail the first delivery."""
    config = env / "dhis2.yaml"
    config.write_text(DHIS2_DESTINATION.format(mappings=SHIPPED_MAPPINGS, mapping="mappings/dhis2/no-such-file.yaml"))
    result = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        f"{config}:7: destinations[0].options.mapping: mappings/dhis2/no-such-file.yaml does not exist"
    ), result.stderr
    assert "1 problem(s)" in result.stderr and result.stdout == ""
    present = SHIPPED_MAPPINGS / "dhis2" / "chw-household-visit.yaml"
    config.write_text(DHIS2_DESTINATION.format(mappings=SHIPPED_MAPPINGS, mapping=present))
    ok = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert ok.exit_code == 0, ok.output


def test_config_check_refuses_a_source_whose_mapping_set_is_missing_or_broken(env: Path) -> None:
    import shutil

    shutil.copytree(SHIPPED_MAPPINGS, env / "mappings")
    person = env / "mappings" / "cht" / "person.yaml"
    person.write_text(person.read_text().replace("| human_name", "| humane_name"))
    config = env / "sources.yaml"
    config.write_text("sources:\n  - {name: cht, kind: cht, mapping: cht}\n  - name: kobo\n    kind: kobo\n"
                      "    mapping: kobbo\n")
    result = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2, result.output
    # Both rules that use the converter, then the source (mappings_dir is ./mappings, the default).
    assert len(re.findall(r"^mappings/cht/person\.yaml:\d+: .*humane_name", result.stderr, re.MULTILINE)) == 2
    assert f"{config}:5: sources[1].mapping: source kobo → kobbo" in result.stderr
    assert "3 problem(s)" in result.stderr and result.stdout == ""


def test_clients_set_policy_stores_lists_and_clears_a_data_policy(env: Path) -> None:
    created = runner.invoke(app, ["clients", "create", "district-emr", "--scope", "system/*.rs"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    result = runner.invoke(app, ["clients", "set-policy", "district-emr", "--organization", "Organization/dist-a",
                                 "--district", "Gasabo", "--deidentify"])
    assert result.exit_code == 0, result.output
    client = _client(env, token)
    assert client is not None and client.policy == {
        "organizations": ["Organization/dist-a"], "districts": ["Gasabo"], "deidentify": True}
    listed = runner.invoke(app, ["clients", "list"]).stdout
    assert "policy org dist-a; district Gasabo; de-identified" in listed

    bad = runner.invoke(app, ["clients", "set-policy", "district-emr", "--organization", "dist-a"])
    assert bad.exit_code == 2 and "not a Organization reference like Organization/abc" in bad.stderr
    neither = runner.invoke(app, ["clients", "set-policy", "district-emr"])
    assert neither.exit_code != 0 and "--clear" in neither.stderr
    missing = runner.invoke(app, ["clients", "set-policy", "nobody", "--district", "x"])
    assert missing.exit_code == 1 and "no client named 'nobody'" in missing.stderr

    cleared = runner.invoke(app, ["clients", "set-policy", "district-emr", "--clear"])
    assert cleared.exit_code == 0, cleared.output
    after = _client(env, token)
    assert after is not None and after.policy is None


def _keys(env: Path, name: str) -> object:
    store = open_store(f"sqlite:///{env}/cli.db")
    try:
        client = store.client_by_name(name)
        return None if client is None else client.jwks
    finally:
        store.close()


def test_clients_create_and_set_keys_register_public_keys(env: Path) -> None:
    from tests.support.smart import ec_key, public_jwks, rsa_key

    jwks_file = env / "emr.jwks.json"
    jwks_file.write_text(json.dumps(public_jwks(rsa_key())), encoding="utf-8")
    created = runner.invoke(app, ["clients", "create", "emr", "--scope", "system/Patient.rs", "--jwks", str(jwks_file)])
    assert created.exit_code == 0, created.output
    assert _keys(env, "emr") == public_jwks(rsa_key())
    jwks_file.write_text(json.dumps(public_jwks(ec_key())), encoding="utf-8")
    replaced = runner.invoke(app, ["clients", "set-keys", "emr", "--jwks", str(jwks_file)])
    assert replaced.exit_code == 0 and "ec-1" in replaced.stdout
    assert _keys(env, "emr") == public_jwks(ec_key())
    assert runner.invoke(app, ["clients", "list"]).stdout.strip().endswith("\tkeys ec-1")
    by_url = runner.invoke(app, ["clients", "set-keys", "emr", "--jwks-url", "https://emr.example.org/jwks.json"])
    assert by_url.exit_code == 0 and _keys(env, "emr") == {"jwks_uri": "https://emr.example.org/jwks.json"}
    assert runner.invoke(app, ["clients", "list"]).stdout.strip().endswith("\tkeys https://emr.example.org/jwks.json")
    cleared = runner.invoke(app, ["clients", "set-keys", "emr", "--clear"])
    assert cleared.exit_code == 0 and _keys(env, "emr") is None
    missing = runner.invoke(app, ["clients", "set-keys", "nobody", "--clear"])
    assert missing.exit_code == 1 and "no client named 'nobody'" in missing.stderr


def test_key_sets_that_cannot_work_are_refused_naming_the_file(env: Path) -> None:
    from tests.support.smart import rsa_key

    runner.invoke(app, ["clients", "create", "emr", "--scope", "admin"])
    private = env / "private.json"
    private.write_text(json.dumps({"keys": [rsa_key().as_dict(private=True)]}), encoding="utf-8")
    weak = env / "weak.json"
    weak.write_text(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ", "kid": "k"}]}),
                    encoding="utf-8")
    broken = env / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    cases = [
        (["--jwks", str(private)], f"{private}: key 1 (rsa-1) is a private or symmetric key"),
        (["--jwks", str(weak)], f"{weak}: no public key can verify RS384 or ES384"),
        (["--jwks", str(broken)], f"{broken}: not JSON"),
        (["--jwks", str(env / "absent.json")], "absent.json: cannot read"),
        (["--jwks-url", "http://emr.example.org/jwks"], "must be https"),
        (["--jwks", str(weak), "--jwks-url", "https://emr.example.org/jwks"], "not both"),
        ([], "give one of --jwks FILE, --jwks-url URL or --clear"),
        (["--clear", "--jwks-url", "https://emr.example.org/jwks"], "give one of"),
    ]
    for options, message in cases:
        result = runner.invoke(app, ["clients", "set-keys", "emr", *options])
        assert result.exit_code == 2, (options, result.output)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert _keys(env, "emr") is None
    refused = runner.invoke(app, ["clients", "create", "lab", "--scope", "admin", "--jwks", str(private)])
    assert refused.exit_code == 2 and _keys(env, "lab") is None


def test_config_check_names_file_and_line_of_any_bad_value_the_file_wrote(env: Path) -> None:
    config = env / "bad-source.yaml"
    config.write_text("port: 8080\nsources:\n  - {name: a, kind: cht, mapping: cht}\n"
                      "  - {name: b, kind: cht, mapping: cht, quarantine_status: 500}\n")
    result = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2
    assert result.stderr == f"gateway: {config}:4: sources[1].quarantine_status: must be 202 or 422\n"


def test_a_bad_value_from_the_environment_names_its_variable_not_the_file(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = env / "ok.yaml"
    config.write_text("port: 8080\n")
    monkeypatch.setenv("GATEWAY_SOURCES", '[{"name": "a", "kind": "foo", "mapping": "cht"}]')
    result = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2
    assert "sources.0.kind (GATEWAY_SOURCES)" in result.stderr
    assert re.search(rf"{re.escape(str(config))}:\d", result.stderr) is None


def test_config_check_refuses_secrets_it_cannot_read(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing secret passed the check, then `gateway worker` refused to start and pulls failed."""
    config = env / "secrets.yaml"
    config.write_text(
        "destinations:\n"
        "  - name: shr\n"
        "    kind: fhir\n"
        "    base_url: https://shr.example.org/fhir\n"
        "    auth: {type: bearer, secret_file: /run/secrets/nope}\n"
        "  - name: emr\n"
        "    kind: fhir\n"
        "    base_url: https://emr.example.org/fhir\n"
        "    auth: {type: bearer, secret_env: EMR_TOKEN}\n"
    )
    monkeypatch.delenv("EMR_TOKEN", raising=False)
    result = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{config}:5: destinations[0].auth: cannot read secret file /run/secrets/nope")
    assert lines[1].startswith(f"{config}:9: destinations[1].auth: environment variable EMR_TOKEN is not set")
    assert "2 problem(s)" in result.stderr and "(destination emr)" in lines[1]
    secret = env / "shr.token"
    secret.write_text("s3cret\n")
    config.write_text(config.read_text().replace("/run/secrets/nope", str(secret)))
    monkeypatch.setenv("EMR_TOKEN", "t0ken")
    ok = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert ok.exit_code == 0, ok.output
    assert "s3cret" not in ok.output and "t0ken" not in ok.output


def test_clients_create_of_an_existing_client_says_what_it_replaces(env: Path) -> None:
    first = runner.invoke(app, ["clients", "create", "lab", "--scope", "system/Observation.rs", "--expires", "90d"])
    assert first.exit_code == 0 and "created client lab" in first.stdout and first.stderr == ""
    again = runner.invoke(app, ["clients", "create", "lab", "--scope", "system/Observation.rs"])
    assert again.exit_code == 0 and "re-keyed client lab" in again.stdout
    assert "its old token stops working" in again.stderr and "clients rotate" in again.stderr
    assert _client(env, first.stdout.strip().splitlines()[-1]) is None  # the old token is gone


def test_worker_on_a_store_it_cannot_use_says_so_in_one_line(env: Path) -> None:
    """A store written by a newer gateway is refused with one line, not a traceback."""
    import sqlite3
    import time

    open_store(f"sqlite:///{env}/cli.db").close()
    with sqlite3.connect(env / "cli.db") as db:
        db.execute("INSERT INTO schema_migrations VALUES (999, ?)", (time.time(),))
    config = env / "worker.yaml"
    config.write_text(f"store_url: sqlite:///{env}/cli.db\nqueue_url: sqlite:///{env}/queue.db\n")
    result = runner.invoke(app, ["worker", "--config", str(config)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "schema version 999" in result.stderr and result.stderr.count("\n") <= 2, result.stderr


@pytest.mark.parametrize(
    "args",
    [["revoke", "nobody"], ["rotate", "nobody"], ["set-keys", "nobody", "--clear"],
     ["set-policy", "nobody", "--district", "x"]],
)
def test_an_unknown_client_names_where_the_command_looked(env: Path, args: list[str]) -> None:
    """README, Quickstart: a command that finds nothing names the configuration, store and queue it used."""
    result = runner.invoke(app, ["clients", *args])
    assert result.exit_code == 1 and "no client named 'nobody'" in result.stderr
    assert f"store sqlite:///{env}/cli.db" in result.stderr and "configuration " in result.stderr


@pytest.mark.parametrize("query", ["", "?schema=chw"])  # a schema is created first, on a connection of its own
def test_an_unreachable_store_is_one_line_on_stderr_not_a_traceback(tmp_path: Path, query: str) -> None:
    """README, command line: exit codes with a one-line reason; errors.py's table gives the code (1)."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        env = {**os.environ, "GATEWAY_STORE_URL": f"postgresql://nobody@127.0.0.1:{port}/nowhere{query}"}
        env.pop("GATEWAY_CONFIG", None)
        root = Path(__file__).resolve().parents[1]
        env["PYTHONPATH"] = str(root)
        done = subprocess.run([sys.executable, "-m", "gateway", "clients", "list"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("gateway: the PostgreSQL store is unavailable")


@pytest.mark.parametrize(
    "command",
    [
        ["queue", "status"],
        ["queue", "dead-letters"],
        ["queue", "workers"],
        ["dhis2", "ping", "dhis2-sandbox"],
        ["dhis2", "metadata", "pull", "dhis2-sandbox"],
    ],
)
def test_every_command_names_file_line_and_setting_of_a_bad_value(env: Path, command: list[str]) -> None:
    """Not only ``config check``: ``queue …`` said ``port: Input should be …`` without the file, and
    ``dhis2 …`` printed pydantic's several-line report with its documentation URL."""
    config = env / "bad.yaml"
    config.write_text("store_url: sqlite:///x.db\nport: eighty\n")
    result = runner.invoke(app, [*command, "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"gateway: {config}:2: port: "), result.stderr
    assert "errors.pydantic.dev" not in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_bad_environment_value_names_its_variable_in_every_command(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_SEARCH__MAX_COUNT", "abc")
    for command in (["queue", "status"], ["dhis2", "ping", "dhis2-sandbox"], ["quarantine", "list"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert "search.max_count (GATEWAY_SEARCH__MAX_COUNT)" in result.stderr, (command, result.stderr)
    # With a file that does not write the setting, the line does not send the reader to the file.
    config = env / "fine.yaml"
    config.write_text("port: 8090\n")
    for command in (["queue", "status"], ["quarantine", "list"]):
        result = runner.invoke(app, [*command, "--config", str(config)])
        assert result.exit_code == 2, (command, result.output)
        assert "(GATEWAY_SEARCH__MAX_COUNT): " in result.stderr and str(config) not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test?schema=probe-4", "schema must be letters, digits and underscores"),
        ("postgresql://postgres@127.0.0.1:5432/test?schema=s&pool_timeout=soon", "pool_timeout must be seconds"),
        ("sqlite:///x.db?synchronous=bogus", "sqlite store URLs take one option"),
    ],
)
def test_a_bad_store_url_option_names_the_setting_not_a_traceback(
    env: Path, monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    """``?schema=probe-4`` passed ``config check`` and made every other command end in a
    ValueError traceback from the store: the URL's own options are checked with the setting."""
    monkeypatch.setenv("GATEWAY_STORE_URL", url)
    for command in (["config", "check"], ["clients", "list"], ["quarantine", "list"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert "store_url (GATEWAY_STORE_URL)" in result.stderr and reason in result.stderr, (command, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
