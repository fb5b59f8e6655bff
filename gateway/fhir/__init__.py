"""FHIR R4 resources: parsing, validation, FHIRPath syntax, OperationOutcomes, Bundles, and the REST
interactions over the store."""

import lazy_loader

# The names below load on first use, so importing one submodule does not import the rest;
# ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
