"""API clients, bearer tokens and SMART v2 system scopes."""

from gateway.auth.authenticator import Authenticator
from gateway.auth.scopes import Principal, ScopeError, parse_scope, validate_scopes
from gateway.auth.tokens import hash_token, new_token

__all__ = ["Authenticator", "Principal", "ScopeError", "hash_token", "new_token", "parse_scope", "validate_scopes"]
