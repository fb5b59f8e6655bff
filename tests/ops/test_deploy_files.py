"""The deployment files, checked without a container runtime or a cluster.

- ``deploy/Dockerfile`` against hadolint-style rules (Debian ships no hadolint; the rules
  below are the ones of hadolint's that apply, plus the project's: non-root, health check,
  multi-stage, the same install line as ``make install``), parsed with ``dockerfile-parse``;
- ``deploy/compose.yaml``: its services, Redis with an append-only file, and every
  ``GATEWAY_*`` variable and the mounted configuration checked against the settings model;
- ``deploy/kubernetes/``: every manifest validated against the Kubernetes 1.31 schemas
  (``kubernetes-validate``), probes on the health routes the API has, selectors that match;
- ``deploy/chw-gateway.service`` and the package's dependencies and extras.

Each rule set is also run on a broken example, so a check that can no longer fail is noticed.
"""

from __future__ import annotations

import ast
import configparser
import io
import re
import shlex
import sys
import tomllib
from collections.abc import Iterator, Mapping
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from pydantic import BaseModel

from gateway.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.31.0"
IMAGE_MAPPINGS = "/opt/chw-gateway/mappings"


# -- the install line


def make_install_line() -> str:
    """``make install``'s pip command with its default extras filled in."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    extras = re.search(r"^EXTRAS \?= (\S+)$", makefile, re.M)
    line = re.search(r"^INSTALL := (.+)$", makefile, re.M)
    assert extras and line, "Makefile: EXTRAS ?= … and INSTALL := … expected"
    return line.group(1).replace("$(EXTRAS)", extras.group(1))


# -- Dockerfile rules


def dockerfile_problems(text: str) -> list[str]:
    """Hadolint-style findings for a Dockerfile's text (empty when it follows every rule)."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    instructions = parser.structure
    problems: list[str] = []
    stages = [i for i in instructions if i["instruction"] == "FROM"]
    names: set[str] = set()
    for stage in stages:
        image, *rest = stage["value"].split()
        if image not in names:
            tag = image.partition("@")[0].rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
            if "@sha256:" not in image and not tag:
                problems.append(f"DL3006 FROM {image}: tag the base image")
            if tag == "latest":
                problems.append(f"DL3007 FROM {image}: do not use latest")
            elif tag and not re.search(r"\d+\.\d+\.\d+", tag):
                problems.append(f"FROM {image}: pin the base image to a patch version")
        if len(rest) == 2 and rest[0].upper() == "AS":
            names.add(rest[1])
    if len(stages) < 2:
        problems.append("multi-stage: build in one stage, copy the result into a slim one")
    final = instructions[instructions.index(stages[-1]):] if stages else []
    users = [i["value"].split(":")[0] for i in final if i["instruction"] == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append("DL3002 the final stage must switch to a non-root USER")
    if not any(i["instruction"] == "HEALTHCHECK" and "/healthz" in i["value"] for i in final):
        problems.append("HEALTHCHECK on /healthz missing in the final stage")
    if not any(i["instruction"] == "COPY" and i["value"].startswith("--from=") for i in final):
        problems.append("the final stage copies nothing from the build stage")
    for item in instructions:
        kind, value = item["instruction"], item["value"]
        if kind == "ADD":
            problems.append(f"DL3020 line {item['startline'] + 1}: use COPY instead of ADD")
        if kind in ("CMD", "ENTRYPOINT") and not value.lstrip().startswith("["):
            problems.append(f"DL3025 line {item['startline'] + 1}: use the JSON form of {kind}")
        if kind == "WORKDIR" and not value.startswith("/"):
            problems.append(f"DL3000 line {item['startline'] + 1}: WORKDIR must be absolute")
        if kind == "RUN" and re.search(r"\bpip3? install\b", value) and "--no-cache-dir" not in value:
            problems.append(f"DL3042 line {item['startline'] + 1}: pip install without --no-cache-dir")
        if kind == "RUN" and re.search(r"\bapt-get install\b", value) and "rm -rf /var/lib/apt/lists" not in value:
            problems.append(f"DL3009 line {item['startline'] + 1}: delete the apt lists after installing")
        if kind == "RUN" and re.search(r"\bcd\s", value):
            problems.append(f"DL3003 line {item['startline'] + 1}: use WORKDIR to switch directory")
        if kind == "ENV" and re.search(r"(PASSWORD|SECRET|TOKEN)\w*=", value, re.I):
            problems.append(f"line {item['startline'] + 1}: no secrets in ENV")
        if kind == "EXPOSE" and any(not p.split("/")[0].isdigit() or int(p.split("/")[0]) > 65535
                                    for p in value.split()):
            problems.append(f"DL3011 line {item['startline'] + 1}: invalid port")
    return problems


def test_the_dockerfile_follows_the_rules() -> None:
    assert dockerfile_problems((DEPLOY / "Dockerfile").read_text(encoding="utf-8")) == []


def test_the_image_installs_with_the_line_make_install_runs() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    runs = [i["value"] for i in DockerfileParser(fileobj=io.BytesIO(text.encode())).structure
            if i["instruction"] == "RUN"]
    assert any(f"/opt/chw-gateway/bin/{make_install_line()}" in run for run in runs), runs


def test_the_dockerfile_rules_catch_a_careless_dockerfile() -> None:
    careless = (
        "FROM python:latest\nWORKDIR app\nADD . /app\nENV DB_PASSWORD=secret\n"
        "RUN cd /app && pip install .\nRUN apt-get install -y curl\nCMD gateway serve\n"
    )
    found = " ".join(dockerfile_problems(careless))
    for code in ("DL3007", "DL3000", "DL3020", "DL3042", "DL3009", "DL3003", "DL3025", "DL3002", "no secrets",
                 "HEALTHCHECK", "multi-stage"):
        assert code in found, (code, found)
    assert "DL3006" in " ".join(dockerfile_problems("FROM python AS a\nFROM a\nUSER 10\n"))


# -- settings fields


def setting_problem(name: str, model: type[BaseModel] = Settings) -> str | None:
    """Why ``GATEWAY_…`` is no setting of the model, or None when it is one."""
    if not name.startswith("GATEWAY_"):
        return None
    if name == "GATEWAY_CONFIG":  # names the file, read by the configuration discovery
        return None
    parts = name.removeprefix("GATEWAY_").lower().split("__")
    current: Any = model
    for part in parts:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields or (current is Settings and part == "config_file"):
            return f"{name}: {part!r} is not a setting"
        annotation = fields[part].annotation
        current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return None


def test_the_settings_check_refuses_unknown_names() -> None:
    assert setting_problem("GATEWAY_STORE_URL") is None and setting_problem("GATEWAY_RATE_LIMIT__REDIS_URL") is None
    assert setting_problem("GATEWAY_STORE") is not None
    assert setting_problem("GATEWAY_RATE_LIMIT__REDIS") is not None
    assert setting_problem("GATEWAY_STORE_URL__X") is not None


def settings_with(config_text: str, environ: Mapping[str, str], tmp_path: Path) -> Settings:
    """The Settings a container would build: its config file (mappings from the checkout) and its environment."""
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text.replace(IMAGE_MAPPINGS, str(ROOT / "mappings")), encoding="utf-8")
    overrides: dict[str, Any] = {}
    for name, value in environ.items():
        if name.startswith("GATEWAY_") and name != "GATEWAY_CONFIG":
            path = name.removeprefix("GATEWAY_").lower().split("__")
            target = overrides
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
    return load_settings(config, **overrides)


# -- compose


def compose() -> dict[str, Any]:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    # Compose's interpolation, as `POSTGRES_PASSWORD=… docker compose up` does it.
    text = re.sub(r"\$\{POSTGRES_PASSWORD:\?[^}]*\}", "example-password", text)
    assert "${" not in text, "an interpolated variable the test does not fill in"
    return dict(yaml.safe_load(text))


def gateway_services(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in spec["services"].items()
            if service.get("image", "").startswith("chw-gateway") and name != "dhis2-sandbox"}


def test_compose_runs_api_worker_postgres_redis_and_the_sandbox() -> None:
    spec = compose()
    assert set(spec["services"]) == {"api", "worker", "postgres", "redis", "dhis2-sandbox"}
    redis = spec["services"]["redis"]
    assert redis["command"][:3] == ["redis-server", "--appendonly", "yes"], redis["command"]
    assert "/data" in " ".join(redis["volumes"])
    for name, service in spec["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)
    assert spec["services"]["api"]["command"] == ["serve"] and spec["services"]["worker"]["command"] == ["worker"]
    assert spec["services"]["dhis2-sandbox"]["command"][:2] == ["sandbox", "dhis2"]
    assert spec["services"]["api"]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_compose_gateway_environment_and_configuration_are_valid_settings(tmp_path: Path) -> None:
    spec = compose()
    services = gateway_services(spec)
    assert set(services) == {"api", "worker"}
    for name, service in services.items():
        environ = service["environment"]
        problems = [p for p in map(setting_problem, environ) if p]
        assert problems == [], (name, problems)
        (mounted,) = service["configs"]
        assert mounted["target"] == environ["GATEWAY_CONFIG"]
        config_text = (DEPLOY / spec["configs"][mounted["source"]]["file"]).read_text(encoding="utf-8")
        settings = settings_with(config_text, environ, tmp_path)
        assert settings.store_url.startswith("postgresql://") and settings.queue_url.startswith("redis://")
        assert not settings.delivery.in_process_worker  # the worker service delivers
        for destination in settings.destinations:
            host = re.match(r"https?://([^:/]+)", destination.base_url)
            assert host and host.group(1) in spec["services"], destination.base_url
            secret = destination.auth.secret_file if destination.auth else None
            assert secret is not None and secret.parent == Path("/run/secrets")
            assert secret.name in service["secrets"]
            assert (DEPLOY / spec["secrets"][secret.name]["file"]).is_file()


# -- Kubernetes


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                yield path, doc


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def test_every_manifest_is_valid_for_the_pinned_kubernetes_version() -> None:
    docs = list(manifests())
    assert len(docs) >= 7
    for path, doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_the_validator_refuses_a_broken_manifest() -> None:
    deployment = next(yaml.safe_load_all((DEPLOY / "kubernetes/worker.yaml").read_text(encoding="utf-8")))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment["spec"]["replicas"] = 1
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] = {"httpGet": {"pth": "/healthz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def health_routes() -> set[str]:
    from gateway.api.health import router

    return {route.path for route in router.routes}  # type: ignore[attr-defined]


def test_the_api_and_worker_deployments_probes_autoscaling_and_disruption_budgets() -> None:
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    assert set(deployments) == {"chw-gateway-api", "chw-gateway-worker"}
    routes = health_routes()
    api = deployments["chw-gateway-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz" and "/healthz" in routes
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz" and "/readyz" in routes
    assert deployments["chw-gateway-worker"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["worker"]
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "chw-gateway-api"
    budgets = by_kind("PodDisruptionBudget")
    assert len(budgets) == 2
    for budget in budgets:
        selected = [name for name, d in deployments.items()
                    if budget["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]
                    ["labels"].items()]
        assert len(selected) == 1, budget["metadata"]["name"]
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_manifests_configuration_and_environment_are_valid_settings(tmp_path: Path) -> None:
    (secret,) = by_kind("Secret")
    (config_map,) = by_kind("ConfigMap")
    for deployment in by_kind("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        environ: dict[str, str] = {}
        for entry in container["env"]:
            assert setting_problem(entry["name"]) is None, entry["name"]
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
                environ[entry["name"]] = secret["stringData"][ref["key"]]
            else:
                environ[entry["name"]] = entry["value"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert environ["GATEWAY_CONFIG"] == f"{mounts['config']}/gateway.yaml"
        settings = settings_with(config_map["data"]["gateway.yaml"], environ, tmp_path)
        for destination in settings.destinations:
            secret_file = destination.auth.secret_file if destination.auth else None
            assert secret_file is not None and str(secret_file.parent) == mounts["secrets"]
            assert secret_file.name in secret["stringData"]


# -- systemd and packaging


def test_the_systemd_unit_installs_without_the_test_suite() -> None:
    text = (DEPLOY / "chw-gateway.service").read_text(encoding="utf-8")
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(text)
    service = unit["Service"]
    assert service["ExecStart"] == "/opt/chw-gateway/bin/gateway serve"
    assert service["User"] not in ("root", "0") and service["Environment"].startswith("GATEWAY_CONFIG=")
    instructions = [line for line in text.splitlines() if line.startswith("#")]
    assert not any(re.search(r"\brun `?make test`? once\b", line) for line in instructions)
    install = next(line for line in instructions if "pip install" in line)
    assert f"/opt/chw-gateway/bin/{make_install_line()}".replace('".', '"/path/to/checkout') in install, install


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-").replace(".", "-")


def third_party_imports(package: Path, skip: set[str]) -> Iterator[tuple[str, str]]:
    """(module file, top-level module) of every import of a package that is not the stdlib or its own."""
    for path in package.rglob("*.py"):
        if path.name in skip:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("gateway", "dhis2_sandbox", "conformance"):
                    yield str(path.relative_to(ROOT)), top


def test_the_base_install_holds_what_the_gateway_imports_and_nothing_of_the_extras() -> None:
    project = pyproject()["project"]
    base = {requirement_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert {"postgres", "redis", "sandbox", "dev"} <= set(extras)
    assert {"psycopg", "psycopg-pool"} == {requirement_name(r) for r in extras["postgres"]}
    assert {"redis"} == {requirement_name(r) for r in extras["redis"]}
    assert any(r.startswith("chw-fhir-gateway[") and all(e in r for e in ("postgres", "redis", "sandbox"))
               for r in extras["dev"])
    assert not base & {"psycopg", "psycopg-pool", "redis", "pytest", "mypy", "respx", "schemathesis", "arq"}
    assert "python-multipart" in base  # the console's forms: starlette parses them with it
    distributions = packages_distributions()
    # The PostgreSQL store and the Redis clients are imported only when a URL names them.
    optional = {"postgres.py", "redis_queue.py", "redis_scripts.py", "token_bucket_redis.py", "failure_window_redis.py"}
    missing = {
        (where, module)
        for package in ("gateway", "dhis2_sandbox")
        for where, module in third_party_imports(ROOT / package, optional)
        if not {requirement_name(d) for d in distributions.get(module, [module])} & base
    }
    assert missing == set()

    line = make_install_line()
    assert shlex.split(line)[:4] == ["python", "-m", "pip", "install"] and ".[postgres,redis]" in line
