"""DHIS2: the ``dhis2`` destination kind (tracker and aggregate), its client and mappings.

    connector = create_connector(destination, client=http_client, clock=clock, source=source)

``create_connector`` follows the delivery engine's ``ConnectorFactory`` plus two keywords:
``source``, the ``ResourceSource`` the transformation reads related resources from (the
store: ``StoreResourceSource(store)``), and ``store``, where accepted DHIS2 UIDs are written
back (``writeback``). ``dhis2_factory(store)`` binds both, for
``DeliveryService.create(factories={**FACTORIES, "dhis2": dhis2_factory(store)})``.

Modules: ``client`` (HTTP), ``config`` (destination options), ``uids`` (deterministic UIDs),
``values`` / ``periods`` (DHIS2's value and period rules), ``reports`` /
``aggregate_summary`` (reading import answers), ``jobs`` (async imports), ``metadata`` (the
cache), ``mapping_spec`` / ``mapping_load`` (mapping files), ``tracker_transform`` /
``measure`` / ``aggregate_transform`` (FHIR → DHIS2), ``aggregate_outcome`` (per-value
results), ``orgunits`` / ``mcsd`` (facilities), ``connector`` (delivery), ``writeback`` (UIDs
as FHIR identifiers), ``reporting`` / ``tasks`` (periodic work for ``gateway.scheduler``),
``cli`` (``gateway dhis2 …``).
"""

import lazy_loader

# The names below load on first use, so importing one submodule does not import the rest;
# ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
