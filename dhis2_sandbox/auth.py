"""Authentication of sandbox requests: Personal Access Tokens and Basic, as DHIS2 checks them.

A PAT is ``d2pat_`` + 32 alphanumerics + the 10-digit zero-padded CRC32 of those 32
characters (DHIS2 2.37+); it is sent as ``Authorization: ApiToken <token>``. A malformed
or unknown token answers 401 "The API token does not exists."; missing or wrong Basic
credentials answer the JSON 401 DHIS2's Basic entry point writes. Users without write
access get 403 on writes, users without metadata access 403 on metadata reads.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import zlib
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = [
    "DEFAULT_TOKEN",
    "AuthFailure",
    "SandboxUser",
    "authenticate",
    "default_users",
    "make_token",
]

_TOKEN = re.compile(r"^d2pat_([A-Za-z0-9]{32})(\d{10})$")


def make_token(random_part: str) -> str:
    """A syntactically valid PAT for a 32-character random part (checksum appended)."""
    if not re.fullmatch(r"[A-Za-z0-9]{32}", random_part):
        raise ValueError("the random part of a PAT is 32 alphanumerics")
    return f"d2pat_{random_part}{zlib.crc32(random_part.encode()):010d}"


DEFAULT_TOKEN = make_token("chwGatewaySandboxDemoToken000001")


class SandboxUser(BaseModel):
    """A sandbox account: Basic password and/or PATs, and what it may do."""

    model_config = ConfigDict(frozen=True)

    username: str
    password: SecretStr | None = None
    tokens: tuple[SecretStr, ...] = ()
    can_write: bool = True
    can_read_metadata: bool = True
    capture_org_units: tuple[str, ...] | None = Field(
        None, description="roots of the capture scope; None: the whole hierarchy"
    )
    cascade_delete: bool = Field(
        True,
        description="holds F_TEI_CASCADE_DELETE and F_ENROLLMENT_CASCADE_DELETE: may delete a tracked entity "
        "that still has enrollments (else E1100) or an enrollment that still has events (else E1103)",
    )


def default_users() -> list[SandboxUser]:
    """``admin``/``district`` with the demo PAT, and a read-only ``viewer``/``viewer``."""
    return [
        SandboxUser(username="admin", password=SecretStr("district"), tokens=(SecretStr(DEFAULT_TOKEN),)),
        SandboxUser(username="viewer", password=SecretStr("viewer"), can_write=False),
    ]


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """Why a request is refused: HTTP status and DHIS2's message."""

    status: int
    message: str


def _checksum_ok(token: str) -> bool:
    match = _TOKEN.match(token)
    if match is None:
        return False
    return zlib.crc32(match.group(1).encode()) == int(match.group(2))


def authenticate(header: str | None, users: list[SandboxUser]) -> SandboxUser | AuthFailure:
    """The user an ``Authorization`` header names, or why it does not."""
    if not header:
        return AuthFailure(401, "Unauthorized")
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "apitoken":
        if _checksum_ok(credentials):
            for user in users:
                if any(hmac.compare_digest(t.get_secret_value(), credentials) for t in user.tokens):
                    return user
        return AuthFailure(401, "The API token does not exists.")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return AuthFailure(401, "Unauthorized")
        username, _, password = decoded.partition(":")
        for user in users:
            if (
                user.username == username
                and user.password is not None
                and hmac.compare_digest(user.password.get_secret_value(), password)
            ):
                return user
        return AuthFailure(401, "Unauthorized")
    return AuthFailure(401, "Unauthorized")
