"""Console sessions: a signed cookie naming the admin client, with the nonce its CSRF token derives from.

The cookie is ``<payload>.<signature>``: the payload is base64url JSON ``{"sub": name or null,
"exp": epoch seconds, "n": nonce, "c": the login token's hash, "a": whether that was a SMART
access token}``, the signature an HMAC-SHA256 under the console's key. It holds no token (only
the hash the store keeps, of a random 256-bit token) and no patient data; every request checks
that the login token still authenticates as an admin, so rotating, revoking or narrowing it
ends the session. A visitor who has not logged in gets an anonymous session
(``sub`` null) so the login form, too, carries a CSRF token; logging in issues a new session
with a new nonce (no fixation). The cookie is HttpOnly, SameSite=Strict, and Secure when the
console is reached over https.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass

from gateway import jsonio

__all__ = ["COOKIE", "Session", "SessionSigner"]

COOKIE = "gateway_console"
_ANONYMOUS_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Session:
    """One console session: who logged in (None: nobody yet), until when, and its nonce."""

    subject: str | None
    expires: float
    nonce: str
    credential: str | None = None  # hash of the token the session logged in with
    access_token: bool = False  # that token was a SMART access token (it ends with it)

    @property
    def logged_in(self) -> bool:
        """Whether an admin client logged in with this session."""
        return self.subject is not None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Signs and checks session cookies and derives CSRF tokens, under one key."""

    def __init__(self, key: bytes, lifetime: float) -> None:
        self._key = hashlib.sha256(b"chw-gateway console session\0" + key).digest()
        self.lifetime = lifetime

    def new(
        self,
        subject: str | None,
        now: float | None = None,
        *,
        credential: str | None = None,
        access_token: bool = False,
    ) -> Session:
        """A fresh session (a new nonce) for ``subject`` logged in with the token hashed as
        ``credential``, or an anonymous one."""
        now = time.time() if now is None else now
        lifetime = self.lifetime if subject is not None else _ANONYMOUS_SECONDS
        return Session(subject, now + lifetime, _b64(os.urandom(18)), credential, access_token)

    def dumps(self, session: Session) -> str:
        """The cookie value of ``session``."""
        payload = _b64(jsonio.dumps({"sub": session.subject, "exp": session.expires, "n": session.nonce,
                                     "c": session.credential, "a": session.access_token}))
        return f"{payload}.{self._sign(payload)}"

    def loads(self, value: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value holds; None when it is missing, forged, malformed or expired."""
        if not value or value.count(".") != 1 or len(value) > 1024:
            return None
        payload, signature = value.split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = jsonio.loads(_unb64(payload))
            credential = data.get("c")
            session = Session(data["sub"], float(data["exp"]), str(data["n"]),
                              credential if isinstance(credential, str) else None, data.get("a") is True)
        except (ValueError, KeyError, TypeError):
            return None
        if session.subject is not None and not isinstance(session.subject, str):
            return None
        return session if session.expires > (time.time() if now is None else now) else None

    def csrf_token(self, session: Session) -> str:
        """The CSRF token of a session (forms carry it; every POST must send it back)."""
        return self._sign(f"csrf:{session.nonce}")

    def check_csrf(self, session: Session, token: str | None) -> bool:
        """Whether ``token`` is this session's CSRF token."""
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(session))

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode("ascii"), hashlib.sha256).digest())
