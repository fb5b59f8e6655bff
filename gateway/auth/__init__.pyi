"""Typed surface of ``gateway.auth`` (loaded lazily by ``__init__.py``)."""

from .authenticator import Authenticator as Authenticator
from .scopes import Principal as Principal
from .scopes import ScopeError as ScopeError
from .scopes import parse_scope as parse_scope
from .scopes import validate_scopes as validate_scopes
from .tokens import hash_token as hash_token
from .tokens import new_token as new_token
