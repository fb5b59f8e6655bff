"""ODK Central's OData Submissions feed of a form, as ``getodk/central-backend:docs/api.yaml`` documents it.

``GET /v1/projects/{p}/forms/{f}.svc/Submissions`` answers ``{"@odata.context", "value": [...]}``,
with ``@odata.nextLink`` (a ``$skiptoken``) when ``$top`` cut the list, ``@odata.count`` with
``$count=true``. Rows carry ``__id`` and ``__system`` (submissionDate, updatedAt, deletedAt,
reviewState, edits, ...); a repeat group is a ``<name>@odata.navigationLink`` and, with
``$expand=*``, also the list of its rows. ``$filter`` takes comparisons of ``__system`` fields
(``eq ne gt ge lt le``, a timestamp, a quoted string or ``null``) joined by ``and``/``or``;
``$orderby`` one ``__system`` field. A deleted submission is left out unless the filter names
``__system/deletedAt`` (how Central lists the trash). An edit keeps ``__id``, gives the
submission a new ``meta.instanceID``, counts in ``edits`` and moves ``updatedAt``; a review
moves ``reviewState`` and ``updatedAt``.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from source_sandbox.clock import ServerClock

_COMPARISON = re.compile(r"^__system/(\w+) (eq|ne|gt|ge|lt|le) (null|'[^']*'|\S+)$")
_ORDER = re.compile(r"^__system/(\w+)(?: (asc|desc))?$")


class ODataError(Exception):
    """A query Central would refuse with 400."""


class OdkCentral:
    """Submissions per (project, form), kept expanded."""

    def __init__(self, clock: ServerClock) -> None:
        self.clock = clock
        self.forms: dict[tuple[int, str], list[dict[str, Any]]] = {}

    # -- what a test does to the server -----------------------------------------------------
    def submit(self, project: int, form: str, row: dict[str, Any]) -> dict[str, Any]:
        """A new submission (a copy of ``row``; its ``__system`` is filled in where missing)."""
        row = copy.deepcopy(row)
        system = row.setdefault("__system", {})
        system.setdefault("submissionDate", self.clock.odata())
        for key in ("updatedAt", "deletedAt", "reviewState", "status"):
            system.setdefault(key, None)
        system.setdefault("edits", 0)
        self.forms.setdefault((project, form), []).append(row)
        return row

    def _row(self, project: int, form: str, instance_id: str) -> dict[str, Any]:
        return next(r for r in self.forms[(project, form)] if r["__id"] == instance_id)

    def edit(self, project: int, form: str, instance_id: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Edit a submission in Central: ``change`` alters its data; same ``__id``, new instanceID."""
        row = self._row(project, form, instance_id)
        change(row)
        row.setdefault("meta", {})["instanceID"] = f"uuid:{uuid.uuid4()}"
        row["__system"]["edits"] = int(row["__system"].get("edits") or 0) + 1
        row["__system"]["updatedAt"] = self.clock.odata()

    def review(self, project: int, form: str, instance_id: str, state: str) -> None:
        """Set a review state (``approved``, ``hasIssues``, ``rejected``)."""
        row = self._row(project, form, instance_id)
        row["__system"]["reviewState"] = state
        row["__system"]["updatedAt"] = self.clock.odata()

    def delete(self, project: int, form: str, instance_id: str) -> None:
        """Delete a submission (soft: it goes to the trash)."""
        self._row(project, form, instance_id)["__system"]["deletedAt"] = self.clock.odata()

    # -- the feed -----------------------------------------------------------------------------
    def submissions(self, base: str, project: int, form: str, query: dict[str, str]) -> dict[str, Any]:
        """The OData answer to one request (raises ``ODataError`` for a query Central refuses)."""
        rows = self.forms.get((project, form))
        if rows is None:
            raise KeyError(form)
        where = query.get("$filter", "")
        test = _parse_filter(where)
        chosen = [r for r in rows if ("__system/deletedAt" in where or r["__system"].get("deletedAt") is None)
                  and test(r["__system"])]  # fmt: skip
        order = query.get("$orderby")
        if order:
            match = _ORDER.match(order.strip())
            if match is None:
                raise ODataError(f"$orderby {order!r} is not supported")
            field, direction = match.group(1), match.group(2) or "asc"
            chosen.sort(key=lambda r: (r["__system"].get(field) is not None, _key(r["__system"].get(field))),
                        reverse=direction == "desc")  # fmt: skip
        else:
            chosen.sort(key=lambda r: _key(r["__system"]["submissionDate"]), reverse=True)
        total = len(chosen)
        token = query.get("$skiptoken")
        if token:
            after = json.loads(base64.urlsafe_b64decode(token[2:]))["instanceId"]
            ids = [r["__id"] for r in chosen]
            chosen = chosen[ids.index(after) + 1:] if after in ids else chosen
        skip = int(query.get("$skip", "0"))
        chosen = chosen[skip:]
        top = int(query["$top"]) if "$top" in query else None
        page = chosen[:top] if top is not None else chosen
        expand = query.get("$expand") == "*"
        service = f"{base}/v1/projects/{project}/forms/{form}.svc"
        answer: dict[str, Any] = {"@odata.context": f"{service}/$metadata#Submissions"}
        if query.get("$count") == "true":
            answer["@odata.count"] = total
        answer["value"] = [_shape(r, expand) for r in page]
        if top is not None and len(chosen) > top:
            token = "01" + base64.urlsafe_b64encode(json.dumps({"instanceId": page[-1]["__id"]}).encode()).decode()
            kept = {k: v for k, v in query.items() if k not in ("$skiptoken", "$skip")}
            link = urlencode({**kept, "$skiptoken": token})
            answer["@odata.nextLink"] = f"{base}/v1/projects/{project}/forms/{form}.svc/Submissions?{link}"
        return answer


def _key(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return value
    return value if value is not None else 0


def _parse_filter(text: str) -> Callable[[dict[str, Any]], bool]:
    """``a and b or c``: ``and`` binds tighter, no parentheses (what the gateway needs)."""
    if not text.strip():
        return lambda system: True
    alternatives = [[_comparison(part) for part in re.split(r" and ", alt)] for alt in re.split(r" or ", text.strip())]
    return lambda system: any(all(test(system) for test in conj) for conj in alternatives)


def _comparison(text: str) -> Callable[[dict[str, Any]], bool]:
    match = _COMPARISON.match(text.strip())
    if match is None:
        raise ODataError(f"the $filter expression {text!r} uses features not supported by this server")
    field, op, literal = match.groups()
    if literal == "null":
        value: Any = None
    elif literal.startswith("'"):
        value = literal[1:-1]
    else:
        value = literal

    def test(system: dict[str, Any]) -> bool:
        have = system.get(field)
        if value is None or have is None:
            return {"eq": have is value, "ne": have is not value}.get(op, False)
        left, right = _key(have), _key(value)
        outcome: bool = {"eq": left == right, "ne": left != right, "gt": left > right, "ge": left >= right,
                         "lt": left < right, "le": left <= right}[op]  # fmt: skip
        return outcome

    return test


def _shape(row: dict[str, Any], expand: bool) -> dict[str, Any]:
    """A row as served: without ``$expand`` a repeat is only its navigation link."""
    out = copy.deepcopy(row)
    if not expand:
        _drop_repeats(out)
    return out


def _drop_repeats(node: Any) -> None:
    if isinstance(node, dict):
        for key in [k for k in node if f"{k}@odata.navigationLink" in node]:
            del node[key]
        for value in node.values():
            _drop_repeats(value)
