"""A DHIS2 Web API sandbox: the subset the gateway's DHIS2 connector uses, with faults.

    from dhis2_sandbox import FaultConfig, SandboxServer, create_sandbox_app

    app = create_sandbox_app(None, FaultConfig(error_rate=0.1, seed=1))
    with SandboxServer(app) as server:      # uvicorn on a free loopback port
        ...  # point a client at server.base_url, with DEFAULT_TOKEN

See ``app`` for the endpoints, ``faults`` for the fault model and ``storage`` for what is
kept of accepted data.

The sandbox is the judge of what the gateway's connector sends, so it is a package of its own
and imports nothing of ``gateway``: its value-type, UID and period rules (``valuetypes``,
``periods``) are written from DHIS2's documented behaviour (shared/dhis2 README, recorded
samples), not borrowed from the connector, so a mistake in one is seen by the other
(import-linter contract ``sandbox-independent``; tests/sandbox/test_independence.py).
"""

import lazy_loader

# The names below load on first use, so importing one submodule does not import the rest;
# ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
