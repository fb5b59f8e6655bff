"""The operator console at ``/console``: server-rendered pages (Jinja2, htmx vendored), for admin clients.

``install(app, settings)`` adds its routes, its static files and its error pages. The pages
(``pages_*``) call the same services as the admin API and the CLI: ``DeliveryAdmin``, the
ingest service, ``gateway.auth.create_client`` and the store.
"""

import lazy_loader

# The names below load on first use; ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
