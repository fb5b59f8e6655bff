"""Classic R4 criteria-based Subscriptions: ``criteria`` is a search (``Observation?code=…``).

R4 core (Subscription, "rest-hook"): a resource that is created or updated and matches the
criteria, judged on its new content, is notified; a deletion never is. The gateway serves such
a criteria as a topic of one trigger (its type, create and update, its search parameters), so
the follower matches it with the very search a topic's trigger runs (the criteria, ``_id`` of
the changed resources and the owner's data policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl

from gateway.auth import Principal
from gateway.errors import FhirError, invalid
from gateway.r4 import RESOURCE_TYPES
from gateway.search import RESULT_PARAMS, QueryParser, SearchAccess, SearchError
from gateway.subscriptions.topics import Topic, Trigger

_WHERE = ["Subscription.criteria"]
_CHANGED = frozenset({"create", "update"})
_SHAPING = ("_include", "_revinclude", "_sort")  # with modifiers (``_include:iterate``)
#: Types a criteria may not watch: subscriptions and the audit trail are not stored resources.
_UNWATCHABLE = frozenset({"Subscription", "AuditEvent"})


def is_search(criteria: str) -> bool:
    """Does ``criteria`` read as an R4 search (``Type`` or ``Type?params``) rather than a canonical URL?"""
    head = criteria.partition("?")[0]
    return head.isalnum() and head[:1].isupper()


def criteria_topic(criteria: str, parser: QueryParser | None) -> Topic:
    """The one-trigger topic a criteria stands for (400 naming ``Subscription.criteria`` when it
    cannot be used); without ``parser`` its parameters are not checked again (stored ones were)."""
    rtype, _, query = criteria.partition("?")
    if rtype not in RESOURCE_TYPES:
        raise invalid(f"criteria: {rtype[:64]!r} is not an R4 resource type", _WHERE)
    if rtype in _UNWATCHABLE:
        raise invalid(f"criteria: {rtype} resources cannot be subscribed to", _WHERE, code="not-supported")
    params = tuple(parse_qsl(query, keep_blank_values=True))
    for name, _ in params:
        if name in RESULT_PARAMS or name.split(":", 1)[0] in _SHAPING:
            raise invalid(f"criteria: {name} shapes a search result and cannot select what is notified", _WHERE,
                          code="not-supported")
    if parser is not None:
        try:
            parser.parse(rtype, params, strict=True)
        except SearchError as exc:
            raise invalid(f"criteria: {exc.diagnostics}", _WHERE) from exc
    trigger = Trigger(rtype, _CHANGED, params, description=f"a {rtype} matching the criteria is created or updated")
    return Topic(id="criteria", title=criteria, description="an R4 criteria-based Subscription",
                 triggers=(trigger,), filters={})


def _owner_search(rtype: str, principal: Principal) -> SearchAccess:
    """What the owner may match on: its own watched type with ``r``, every other type a chain or
    ``_has`` looks into with ``s``, and nothing a de-identified client does not see."""
    return SearchAccess(lambda t, letter: (t == rtype and principal.can(t, "r")) or principal.can(t, letter),
                        deidentified=principal.deidentified)


def check_filters(
    topic: Topic, filters: Sequence[tuple[str | None, Sequence[tuple[str, str]]]], principal: Principal,
    parser: QueryParser,
) -> None:
    """403 naming the filter unless ``principal`` may match what each of a topic subscription's
    filter criteria looks at (a chain such as ``subject:Patient.name``, a de-identified element)."""
    for index, (rtype, params) in enumerate(filters):
        where = [f"Subscription.criteria.extension('backport-filter-criteria')[{index}]"]
        for t in [rtype] if rtype else list(topic.filters):
            usable = [(n, v) for n, v in params if n.split(":", 1)[0] in topic.filters.get(t, ())]
            if not usable or not principal.can(t, "r"):
                continue  # changes of a type the owner may not read are never matched
            try:
                parser.parse(t, usable, access=_owner_search(t, principal))
            except FhirError as exc:
                raise FhirError(f"filter criteria: {exc.diagnostics}", status=exc.status, code=exc.code,
                                expression=where) from exc


def check_owner(topic: Topic, principal: Principal, parser: QueryParser) -> None:
    """403 naming ``Subscription.criteria`` unless ``principal`` may read the criteria's type and search
    every other type its parameters look into (a chain, ``_has``)."""
    trigger = topic.triggers[0]
    rtype = trigger.resource_type
    if not principal.can(rtype, "r"):
        raise FhirError(f"the client's scopes do not allow reading {rtype} (needs system/{rtype}.r)",
                        status=403, code="forbidden", expression=_WHERE)
    # A de-identified client's notifications would tell what its criteria matched, as a search would.
    try:
        parser.parse(rtype, trigger.query, access=_owner_search(rtype, principal))
    except FhirError as exc:
        raise FhirError(f"criteria: {exc.diagnostics}", status=exc.status, code=exc.code, expression=_WHERE) from exc
