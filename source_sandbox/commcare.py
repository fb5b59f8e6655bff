"""CommCare HQ's Form API v1 (``/a/{domain}/api/form/v1/``) and Case API v2 (``/a/{domain}/api/case/v2/``).

Form API: ``{"meta": {"limit", "next", "offset", "previous", "total_count"}, "objects": [...]}``
(the copied list example), ``limit``/``offset`` paging with a relative ``meta.next``, filters
``indexed_on_start``/``indexed_on_end`` and ``order_by=indexed_on``. Case API v2 (cases-v2.rst):
``{"matching_records", "cases": [...], "next"}`` with an absolute ``next`` URL carrying a
``cursor``; filters ``case_type``, ``indexed_on.gte``/``.gt``/``.lte``/``.lt``. ``indexed_on``
moves whenever HQ re-indexes a form (edit, archive) or a case (update, close).
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from source_sandbox.clock import ServerClock
from source_sandbox.commcare_receiver import Receiver


class CommCare:
    """Forms and cases per project space."""

    def __init__(self, clock: ServerClock) -> None:
        self.clock = clock
        self.forms: dict[str, list[dict[str, Any]]] = {}
        self.cases: dict[str, list[dict[str, Any]]] = {}
        self.receiver = Receiver(self.forms, self.cases, clock)  # the write side: form submissions

    def submit_form(self, domain: str, form: dict[str, Any]) -> dict[str, Any]:
        """A form as HQ stores it after processing (a copy; ``indexed_on`` set now)."""
        form = copy.deepcopy(form)
        now = self.clock.commcare()
        form["indexed_on"] = now
        form.setdefault("server_modified_on", now)
        form.setdefault("archived", False)
        self.forms.setdefault(domain, []).append(form)
        return form

    def edit_form(self, domain: str, form_id: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Edit (or archive) a form: HQ re-indexes it."""
        form = next(f for f in self.forms[domain] if f["id"] == form_id)
        change(form)
        now = self.clock.commcare()
        form["indexed_on"] = now
        form["server_modified_on"] = now

    def put_case(self, domain: str, case: dict[str, Any]) -> None:
        """Create or update a case (by ``case_id``): HQ re-indexes it."""
        case = copy.deepcopy(case)
        case["indexed_on"] = self.clock.commcare()
        cases = self.cases.setdefault(domain, [])
        cases[:] = [c for c in cases if c["case_id"] != case["case_id"]] + [case]

    def case(self, domain: str, case_id: str) -> dict[str, Any] | None:
        """A case as stored now (a copy), or None."""
        found = next((c for c in self.cases.get(domain, []) if c["case_id"] == case_id), None)
        return copy.deepcopy(found) if found is not None else None

    def form_list(self, domain: str, query: dict[str, str]) -> dict[str, Any]:
        """Form API v1 list."""
        forms = list(self.forms.get(domain, []))
        if "indexed_on_start" in query:
            forms = [f for f in forms if f["indexed_on"] >= query["indexed_on_start"]]
        if "indexed_on_end" in query:
            forms = [f for f in forms if f["indexed_on"] <= query["indexed_on_end"]]
        if query.get("order_by") == "indexed_on":
            forms.sort(key=lambda f: str(f["indexed_on"]))
        limit = min(int(query.get("limit", "20")), 1000)
        offset = int(query.get("offset", "0"))
        page = forms[offset:offset + limit]
        more = offset + limit < len(forms)
        kept = {k: v for k, v in query.items() if k != "offset"}
        return {
            "meta": {
                "limit": limit,
                "next": f"/a/{domain}/api/form/v1/?{urlencode({**kept, 'offset': offset + limit})}" if more else None,
                "offset": offset,
                "previous": None,
                "total_count": len(forms),
            },
            "objects": copy.deepcopy(page),
        }

    def case_list(self, base: str, domain: str, query: dict[str, str]) -> dict[str, Any]:
        """Case API v2 list."""
        filters = dict(query)
        offset = 0
        if "cursor" in filters:
            saved = json.loads(base64.urlsafe_b64decode(filters.pop("cursor")))
            offset = saved.pop("offset")
            filters = {**saved, **filters}
        cases = sorted(self.cases.get(domain, []), key=lambda c: str(c["indexed_on"]))
        for name, test in (("indexed_on.gte", str.__ge__), ("indexed_on.gt", str.__gt__),
                           ("indexed_on.lte", str.__le__), ("indexed_on.lt", str.__lt__)):
            if name in filters:
                bound = filters[name]
                cases = [c for c in cases if test(str(c["indexed_on"]), bound)]
        if "case_type" in filters:
            cases = [c for c in cases if c.get("case_type") == filters["case_type"]]
        limit = min(int(filters.get("limit", "20")), 5000)
        page = cases[offset:offset + limit]
        answer: dict[str, Any] = {"matching_records": len(cases), "cases": copy.deepcopy(page)}
        if offset + limit < len(cases):
            state = {k: v for k, v in filters.items() if k != "limit"}
            cursor = base64.urlsafe_b64encode(json.dumps({**state, "offset": offset + limit}).encode()).decode()
            answer["next"] = f"{base}/a/{domain}/api/case/v2/?{urlencode({'limit': limit, 'cursor': cursor})}"
        else:
            answer["next"] = None
        return answer
