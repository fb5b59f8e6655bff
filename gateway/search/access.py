"""What a client may search: the one check every search the server runs for a client passes.

A search that filters on a type is a search of that type, wherever it happens: the
query's own type, the type a chain (``subject:Patient.family``) or a ``_has`` looks into,
and the type a conditional create, update, delete or reference in a Bundle looks up all
need the SMART ``s`` letter on that type. Resources returned alongside the matches
(``_include``, ``_revinclude``, ``$everything``) need ``r`` or ``s`` on their type, the
same as reading them. ``QueryParser.parse`` checks every query it builds against a
``SearchAccess``; ``$everything`` asks it which types to return. The client's data policy
(``gateway.search.policy``) rides along: the parser puts it on the query, and the store
applies it to every row the query reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gateway.errors import FhirError
from gateway.r4 import RESOURCE_TYPES
from gateway.search.policy import RowFilter

Permission = Callable[[str, str], bool]  # (resource type, c|r|u|d|s) -> allowed


class SearchAccess:
    """A client's permission to search and include resource types, and the rows it may see."""

    __slots__ = ("can", "deidentified", "policy")

    def __init__(self, can: Permission, policy: RowFilter | None = None, *, deidentified: bool = False) -> None:
        self.can = can
        #: The client reads de-identified resources, so it may not search by what that strips
        #: (``gateway.search.deidentified``).
        self.deidentified = deidentified or (policy is not None and policy.policy.deidentify)
        self.policy = policy if policy is not None and policy.policy.limits_rows else None

    def require_search(self, rtype: str, expression: str | None = None) -> None:
        """403 unless the client may search ``rtype``."""
        if not self.can(rtype, "s"):
            raise FhirError(
                f"the client's scopes do not allow search on {rtype} (needs system/{rtype}.s)",
                status=403, code="forbidden", expression=[expression] if expression else None,
            )  # fmt: skip

    def may_return(self, rtype: str) -> bool:
        """May resources of ``rtype`` be returned to the client (it can read or search them)?"""
        return self.can(rtype, "r") or self.can(rtype, "s")

    def require_return(self, rtype: str, expression: str) -> None:
        """403 unless resources of ``rtype`` may be returned to the client."""
        if not self.may_return(rtype):
            raise FhirError(
                f"the client's scopes do not allow reading {rtype} (needs system/{rtype}.r or .s)",
                status=403, code="forbidden", expression=[expression],
            )  # fmt: skip

    def returnable(self, candidates: Iterable[str] | None = None) -> list[str] | None:
        """The types among ``candidates`` (default: all) the client may be given; None when all of them."""
        types = list(RESOURCE_TYPES if candidates is None else candidates)
        allowed = [t for t in types if self.may_return(t)]
        return None if len(allowed) == len(types) else allowed


def _allow_all(rtype: str, letter: str) -> bool:
    return True


# For the server's own searches (ingest's mapped Bundles, the DHIS2 pull), not a client's.
TRUSTED = SearchAccess(_allow_all)
