"""Connectors: the code that talks to each kind of destination (see ``base`` for the seam).

Besides the seam, the package holds what every connector shares and the delivery engine
reuses: the outcome table (``classify``), the HTTP exchange (``http``)
and the configuration connectors read (``config``: credentials, durations).
Connectors never import the delivery engine; it imports them.
"""

import lazy_loader

# The names below load on first use, so importing one submodule does not import the rest;
# ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
