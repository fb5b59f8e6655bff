"""A stand-in for a partner EMR that receives topic-based subscription notifications (rest-hook).

Written from the Subscriptions R5 Backport IG (``../shared/apis/subscriptions-backport.md``):
it accepts ``history`` Bundles whose first entry is a ``subscription-status`` Parameters,
answers handshakes and heartbeats, and keeps each event once by its event number, noting
duplicates (expected: delivery is at-least-once) and any event that arrives out of order or
after a gap. It also stands in for a classic R4 rest-hook subscriber (R4 Subscription page): a
``POST`` without a body is a ping, and a ``PUT`` of a resource to ``<endpoint>/<type>/<id>`` is
kept once per ``meta.versionId`` (noting an older version arriving after a newer one).
It imports nothing from ``gateway`` (an import-linter contract), so it shares no mistake with
the code it judges. Faults make its next answers fail::

    sandbox = SubscriberSandbox()
    app = sandbox.app()                       # serve with uvicorn; endpoint: <url>/hook/<name>
    sandbox.fault("emr", fail=3, status=500)  # the next 3 notifications are refused
    sandbox.receiver("emr").numbers()         # event numbers received, each once
"""

from subscriber_sandbox.app import Receiver, SubscriberSandbox

__all__ = ["Receiver", "SubscriberSandbox"]
