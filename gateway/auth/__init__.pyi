"""Typed surface of ``gateway.auth`` (loaded lazily by ``__init__.py``)."""

from .assertions import ASSERTION_TYPE as ASSERTION_TYPE
from .assertions import OAuthError as OAuthError
from .authenticator import Authenticator as Authenticator
from .clients import ADMIN_TOKEN_NAME as ADMIN_TOKEN_NAME
from .clients import ClientNameError as ClientNameError
from .clients import check_client_name as check_client_name
from .clients import create_client as create_client
from .issuer import IssuedToken as IssuedToken
from .issuer import TokenIssuer as TokenIssuer
from .issuer import claimed_client as claimed_client
from .jwks import ALGORITHMS as ALGORITHMS
from .jwks import KeySetError as KeySetError
from .jwks import KeySets as KeySets
from .jwks import check_key_set as check_key_set
from .scopes import Principal as Principal
from .scopes import ScopeError as ScopeError
from .scopes import grant_scopes as grant_scopes
from .scopes import parse_scope as parse_scope
from .scopes import validate_scopes as validate_scopes
from .tokens import ACCESS_TOKEN_PREFIX as ACCESS_TOKEN_PREFIX
from .tokens import hash_token as hash_token
from .tokens import new_token as new_token
