"""The test oracles themselves: the npm package cache and the R4 JSON-schema oracle."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import httpx
import pytest
import respx

from tests.support import npm
from tests.support.npm import REGISTRY, NpmError, NpmPackage, package_dir
from tests.support.schema_oracle import default_oracle

# -- npm cache -----------------------------------------------------------------------------


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@respx.mock(assert_all_called=True)
def test_npm_package_is_resolved_verified_cached_and_extracted(
    tmp_path: Path, respx_mock: respx.MockRouter
) -> None:
    data = _tarball({"package/package.json": b'{"name": "@demo/pkg"}', "package/x.json": b"{}"})
    tarball_url = "https://registry.npmjs.org/@demo/pkg/-/pkg-1.0.0.tgz"
    metadata = {"versions": {"1.0.0": {"dist": {"tarball": tarball_url, "integrity": _integrity(data)}}}}
    meta_route = respx_mock.get(f"{REGISTRY}/@demo%2fpkg").mock(
        return_value=httpx.Response(200, json=metadata)
    )
    respx_mock.get(tarball_url).mock(return_value=httpx.Response(200, content=data))
    folder = package_dir(NpmPackage("@demo/pkg", "1.0.0"), cache_dir=tmp_path)
    assert (folder / "x.json").read_bytes() == b"{}"
    assert (tmp_path / "demo__pkg-1.0.0.tgz").read_bytes() == data
    # Second use: served from the cache, no network.
    assert package_dir(NpmPackage("@demo/pkg", "1.0.0"), cache_dir=tmp_path) == folder
    assert meta_route.call_count == 1


@respx.mock
def test_npm_tarball_with_a_wrong_digest_is_refused(tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    data = _tarball({"package/package.json": b"{}"})
    url = "https://registry.npmjs.org/pkg/-/pkg-1.0.0.tgz"
    metadata = {"versions": {"1.0.0": {"dist": {"tarball": url, "integrity": _integrity(b"other")}}}}
    respx_mock.get(f"{REGISTRY}/pkg").mock(return_value=httpx.Response(200, json=metadata))
    respx_mock.get(url).mock(return_value=httpx.Response(200, content=data))
    with pytest.raises(NpmError, match="integrity"):
        package_dir(NpmPackage("pkg", "1.0.0"), cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.tgz"))


@respx.mock
def test_npm_unknown_version_and_http_errors(tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    respx_mock.get(f"{REGISTRY}/pkg").mock(return_value=httpx.Response(200, json={"versions": {}}))
    with pytest.raises(NpmError, match="no version"):
        package_dir(NpmPackage("pkg", "9.9.9"), cache_dir=tmp_path)
    respx_mock.get(f"{REGISTRY}/gone").mock(return_value=httpx.Response(404))
    with pytest.raises(NpmError, match="cannot download"):
        package_dir(NpmPackage("gone", "1.0.0"), cache_dir=tmp_path)


# -- schema oracle ------------------------------------------------------------------------------


def test_schema_oracle_rejects_what_the_schema_forbids() -> None:
    oracle = default_oracle()
    assert oracle.errors({"resourceType": "Patient", "active": True}) == []
    for bad in ({"active": "true"}, {"gender": "dog"}, {"nickname": "x"}, {"birthDate": "1974-13-01"}):
        assert oracle.errors({"resourceType": "Patient", **bad}), bad
    assert oracle.errors({"resourceType": "NoSuchType"})
    assert oracle.errors([1, 2])


def test_schema_oracle_checks_nested_resources() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": {"resourceType": "Patient", "active": True}},
            {"resource": {"resourceType": "Patient", "active": "yes"}},
        ],
    }
    errors = default_oracle().errors(bundle)
    assert len(errors) == 1 and errors[0].startswith("$.entry[1].resource (Patient)")
    contained = {"resourceType": "Patient", "contained": [{"resourceType": "Organization", "active": 1}]}
    assert default_oracle().errors(contained)[0].startswith("$.contained[0] (Organization)")


def test_schema_oracle_fixes_only_the_known_schema_bugs() -> None:
    oracle = default_oracle()
    capability = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2024",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
    }
    assert oracle.errors(capability) == []
    assert oracle.errors({**capability, "fhirVersion": "4.0.2"})
    ext = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    assert (
        oracle.errors({"resourceType": "Patient", "meta": {"profile": ["http://x.org/p"], "_profile": [ext]}})
        == []
    )
    aligned = {"resourceType": "Patient", "name": [{"given": ["A", None], "_given": [None, ext]}]}
    assert oracle.errors(aligned) == []
    assert oracle.errors({"resourceType": "Patient", "name": [{"family": "a\u00a0b"}]}) == []


def test_the_test_cache_is_the_users_so_a_fresh_checkout_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_TEST_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert npm._cache_root() == tmp_path / "xdg" / "chw-fhir-gateway-tests"
    monkeypatch.setenv("GATEWAY_TEST_CACHE", str(tmp_path / "chosen"))
    assert npm._cache_root() == tmp_path / "chosen"
    monkeypatch.delenv("GATEWAY_TEST_CACHE")
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))  # no cache can be made under a file
    assert npm._cache_root() == npm.REPO_ROOT / ".cache"
