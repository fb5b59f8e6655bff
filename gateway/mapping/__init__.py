"""The mapping engine: declarative YAML mappings turn community-care records into FHIR.

Usage::

    sets = load_mapping_sets(Path("mappings"))          # compiled once, at start-up
    bundle = sets["cht"].map_record(record)             # a FHIR transaction Bundle (dict)

``MappingError`` (bad record) and ``MappingLoadError`` (bad mapping files) are the only
errors callers need to handle; see ``errors.py``.
"""

import lazy_loader

# The names below load on first use, so importing one submodule does not import the rest;
# ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
