"""The ``client-registry`` destination kind: Patients registered with, or looked up in, a
national client registry (OpenCR-style FHIR API), and the national id written back.

    connector = create_connector(destination, client=http_client, clock=clock, store=store)

Modules: ``config`` (destination options), ``exchanges`` (the registry's API: register,
read back, ``$match``, PDQm search), ``connector`` (delivery and write-back), ``factory``
(``client_registry_factory(store)`` for the delivery engine).
"""

import lazy_loader

# The names below load on first use, so importing one submodule does not import the rest;
# ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
