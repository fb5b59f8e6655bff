"""Patient identity: matching every Patient written against the stored ones, linking the
same person's records (``Patient.link``), review tasks for doubtful pairs, ``Patient/$match``.

Modules: ``normalise`` (compared values), ``blocking`` (candidate keys), ``scoring``
(deterministic rules and the Fellegi–Sunter weight), ``rules`` (the rule file), ``index``
(candidates in memory), ``engine`` (the change-feed follower that writes links), ``golden``
(one golden Patient per person) with ``survivorship`` (which member's value wins), ``review``
(accept/reject pairs) and ``merge`` (merge/unmerge), each decision recorded by ``decision``.
"""

import lazy_loader

# The names below load on first use, so importing one submodule does not import the rest;
# ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
