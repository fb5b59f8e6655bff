"""API clients, bearer tokens, SMART v2 system scopes, and SMART Backend Services (assertions in, access tokens out)."""

import lazy_loader

# The names below load on first use, so importing one submodule does not import the rest;
# ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
