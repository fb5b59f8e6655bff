"""Subscriptions for partner EMRs: topic-based (the FHIR Subscriptions R5 Backport IG on R4) and
classic R4 criteria-based.

A client with ``system/Subscription.c`` creates an R4 ``Subscription`` whose ``criteria`` is
one of the gateway's topic canonicals; the gateway handshakes with its ``rest-hook``
endpoint, follows the store's change feed (``SubscriptionFeed``), numbers each matching
change per subscription, and queues one notification job per event in the delivery queue
(destination ``subscriptions``, ordering key ``Subscription/<id>``), which the
``RestHookConnector`` posts as a notification Bundle. A classic R4 Subscription, whose ``criteria``
is a search (``Observation?code=…``), is matched as a topic of one trigger and delivered by the same
engine as R4's rest-hook says (an empty POST, or a PUT of the resource to ``[endpoint]/[type]/[id]``),
without handshake or heartbeat. Heartbeats and ``$status`` come from ``SubscriptionService``::

    service = SubscriptionService(store, parser, settings.subscriptions, base_url=...)
    record = await service.create(principal, resource)     # handshake included
    bundle = service.status_bundle(record)
"""

import lazy_loader

# The names below load on first use; ``__init__.pyi`` lists them and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
