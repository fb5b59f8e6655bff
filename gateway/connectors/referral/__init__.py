"""The referral return path: destination kinds ``cht-api`` and ``commcare-api``.

A referral Task a facility acted on (accepted, completed, rejected; or marked overdue by
the gateway) goes back to the app the referral came from, as the payload the source's
mapping set declares in ``outbound/*.yaml`` (``gateway.mapping.outbound``):

* ``cht-api``: a report document PUT to CHT's CouchDB API (``/{database}/{_id}``) with a
  deterministic ``_id``, so a repeat is CouchDB's 409 conflict and counts as delivered;
* ``commcare-api``: an XForm with a case update POSTed to the form receiver
  (``/a/{domain}/receiver/api/``) with a deterministic ``instanceID``, which CommCare treats
  as the same form (an edit), never a second one.

Modules: ``config`` (destination options), ``context`` (the Task and what it references,
read from the store), ``xform`` (a payload as CommCare form XML), ``connector`` (delivery),
``factory`` (building one for the delivery engine).
"""

import lazy_loader

# The names below load on first use, so importing one submodule does not import the rest;
# ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
