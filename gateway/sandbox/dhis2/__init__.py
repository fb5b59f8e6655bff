"""A DHIS2 Web API sandbox: the subset the gateway's DHIS2 connector uses, with faults.

    from gateway.sandbox.dhis2 import FaultConfig, SandboxServer, create_sandbox_app

    app = create_sandbox_app(None, FaultConfig(error_rate=0.1, seed=1))
    with SandboxServer(app) as server:      # uvicorn on a free loopback port
        ...  # point a client at server.base_url, with DEFAULT_TOKEN

See ``app`` for the endpoints, ``faults`` for the fault model and ``storage`` for what is
kept of accepted data.
"""

import lazy_loader

# The names below load on first use, so importing one submodule does not import the rest;
# ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
