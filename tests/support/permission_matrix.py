"""The permission matrix: every interaction the CapabilityStatement declares, the requests that
perform it, the SMART letters it needs, and the scope sets to try it with.

Rule table (SMART App Launch v2 system scopes `system/<Type|*>.<cruds>`; the v1 forms
`.read`, `.write` and `.*` mean `rs`, `cud` and `cruds`). `T` is the resource type; "+ T.s"
means the request also searches `T`, since a condition is a search:

| interaction (CapabilityStatement) | request                               | needs              | in a Bundle      |
|-----------------------------------|---------------------------------------|--------------------|------------------|
| read                              | `GET T/id`                            | T.r                | GET entry        |
| vread                             | `GET T/id/_history/vid`               | T.r                | GET entry        |
| update                            | `PUT T/id` (also update-as-create)    | T.u                | PUT entry        |
| update, `conditionalUpdate`       | `PUT T?query`                         | T.u + T.s          | PUT entry        |
| patch                             | `PATCH T/id` (JSON Patch)             | T.u + T.r or T.s   | PATCH (Binary)   |
| delete                            | `DELETE T/id`                         | T.d                | DELETE entry     |
| delete, `conditionalDelete`       | `DELETE T?query`                      | T.d + T.s          | DELETE entry     |
| create                            | `POST T`                              | T.c                | POST entry       |
| create, `conditionalCreate`       | `POST T` + `If-None-Exist`            | T.c + T.s          | `ifNoneExist`    |
| search-type                       | `GET T?query`, `POST T/_search`       | T.s                | GET entry        |
| history-instance                  | `GET T/id/_history`                   | T.r                | GET entry        |
| history-type                      | `GET T/_history`                      | T.s                | GET entry        |
| history-system                    | `GET _history`                        | *.s (every type)   | GET entry        |
| batch, transaction                | `POST [base]` with a Bundle           | each entry's own   | (the forms)      |
| operation `$everything`           | `GET Patient/id/$everything`          | Patient.r          | GET entry        |
| operation `$export`               | `GET Patient/$export` (kick-off)      | Patient.s          | REST only        |
| operation `$validate`             | `POST T/$validate`                    | T.c                | REST only        |
| operation `$validate` (delete)    | `POST T/id/$validate`, mode delete    | T.r + T.d          | REST only        |

Why these letters: SMART v2 gives `r` "read, vread, instance history" and `s` "type and
system search, type and system history": a history that is not of one known resource
enumerates, so it is a search. `history-system` enumerates every type, so it needs `s`
on every type: `system/*.s` (or `.read`, `.*`); `s` on a list of types is not enough. An
update that creates (update-as-create, a conditional update matching nothing) needs `u`
only, as SMART puts `PUT` under `u`. `$everything` returns resources of other types only
where the client holds `r` or `s` on them (resources a client cannot read are left out,
not refused), like `_include`/`_revinclude`. A patch applies to what is stored, so whether
it applies (and leaves a valid resource) tells what is stored: it needs `r` or `s` besides `u`
(a client holding `u` alone may PUT the resource whole, and gets no resource back: the stored
version keeps what the gateway wrote, a DHIS2 UID, which it did not send). A Bundle itself needs
no letter: each entry is checked as the REST request it stands for; a refused entry is
`403` in a batch's response and refuses the whole transaction (`403`). A refused request
is a `403` OperationOutcome with code `forbidden` and changes nothing.

``probes`` reads the interactions, the conditional flags and the operations from the
served CapabilityStatement; one it has no rule for raises ``UnknownInteraction`` so the
matrix cannot silently skip something the server starts to offer. ``scope_sets`` derives
the scope sets each probe is tried with; ``allows`` is the matrix's own reading of scopes
(deliberately not ``gateway.auth``), the oracle the server is held to.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from tests.support.minimal_resources import NoMinimalResource, minimal_resource, reference_elements

LETTERS = "cruds"
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
EVERY = "*"  # a need on every type: only a wildcard scope grants it
FIXED_TYPES = ("Patient", "Observation", "Encounter", "ServiceRequest", "Task")
PATCH = [{"op": "add", "path": "/language", "value": "en"}]
NO_FHIR_SCOPES = (("admin",), ("ingest:*",))


class UnknownInteraction(LookupError):
    """The CapabilityStatement declares something the matrix has no rule for."""


@dataclass(frozen=True, slots=True)
class Need:
    """One SMART letter on one type (``EVERY``: on every type); several letters: any one of them."""

    rtype: str
    letter: str


@dataclass(frozen=True, slots=True)
class Call:
    """One REST request, relative to ``[base]``."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Probe:
    """One interaction on one type: its requests, needs and what an allowed client gets."""

    id: str
    interaction: str
    rtype: str | None
    needs: tuple[Need, ...]
    rest: tuple[Call, ...]
    entry: dict[str, Any] | None  # the Bundle entry (None: not offered in Bundles)
    ok: int  # REST status when allowed
    entry_ok: str  # leading digits of a Bundle entry's response.status when allowed
    writes: bool  # an allowed request changes the store
    deletes: bool = False  # an allowed request deletes the seed (the matrix puts it back)
    filters_types: bool = False  # returns only the types the client may read ($everything)
    stored_body: bool = False  # answers with what was stored, not what was sent: only to a client that may read T
    forms: tuple[str, ...] = ("rest",)  # and "batch", "transaction" where offered


# -- the scope oracle -------------------------------------------------------------------------


def grants(scopes: Iterable[str]) -> dict[str, str]:
    """Letters per type (or ``*``) a set of scopes grants; non-FHIR scopes grant nothing."""
    out: dict[str, str] = {}
    for scope in scopes:
        if not scope.startswith("system/") or "." not in scope:
            continue
        rtype, _, perm = scope.removeprefix("system/").partition(".")
        out[rtype] = out.get(rtype, "") + V1.get(perm, perm)
    return out


def allows(scopes: Iterable[str], needs: Iterable[Need]) -> bool:
    """Do ``scopes`` grant every need?"""
    held = grants(scopes)
    for need in needs:
        on_type = held.get(need.rtype, "") if need.rtype != EVERY else ""
        if not any(letter in on_type + held.get(EVERY, "") for letter in need.letter):
            return False
    return True


def returnable(scopes: Iterable[str], rtype: str) -> bool:
    """May resources of ``rtype`` be returned alongside others (``r`` or ``s`` held)?"""
    scopes = tuple(scopes)
    return allows(scopes, [Need(rtype, "r")]) or allows(scopes, [Need(rtype, "s")])


def _scope(rtype: str, letters: Iterable[str]) -> str:
    return f"system/{rtype}.{''.join(sorted(set(letters), key=LETTERS.index))}"


def _by_type(needs: Iterable[Need]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for need in needs:
        out.setdefault(need.rtype, set()).add(need.letter[0])  # of alternatives, the first
    return out


def scope_sets(probe: Probe, types: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The scope sets a probe is tried with, without repeats.

    The minimal grant (exactly the letters needed, per type), the same letters as wildcard
    scopes, the same letters on another type, for each needed letter every letter but it
    (the other needs still granted), the v1 ``.read``/``.write``/``.*`` forms on the types
    and on ``*``, ``system/*.cruds``, and sets holding no FHIR scope at all.
    """
    needed = _by_type(probe.needs)
    minimal = tuple(_scope(t, letters) for t, letters in sorted(needed.items()))
    all_letters = set().union(*needed.values())
    sets: list[tuple[str, ...]] = [minimal, (_scope(EVERY, all_letters),)]
    others = [t for t in types if t not in needed] or ["Patient"]
    elsewhere = enumerate(sorted(needed.items()))
    sets.append(tuple(_scope(others[i % len(others)], letters) for i, (_, letters) in elsewhere))
    for need in probe.needs:
        rest = {t: set(ls) for t, ls in needed.items()}
        rest[need.rtype] = set(LETTERS) - set(need.letter)
        sets.append(tuple(_scope(t, letters) for t, letters in sorted(rest.items())))
    for form in V1:
        sets.append(tuple(f"system/{t}.{form}" for t in sorted(needed)))
        sets.append((f"system/*.{form}",))
    sets.append(("system/*.cruds",))
    sets.extend(NO_FHIR_SCOPES)
    unique = list(dict.fromkeys(sets))
    return unique


# -- probes from the CapabilityStatement --------------------------------------------------------


def seed_id(rtype: str) -> str:
    """The id of the resource of ``rtype`` every probe of that type works on."""
    return f"pm-{rtype}"


def seed_resource(rtype: str) -> dict[str, Any]:
    """The seed of ``rtype``: its smallest valid resource, referring to the Patient seed where it
    has a ``subject``/``patient``/``for`` element (so ``$everything`` finds it)."""
    body = {**minimal_resource(rtype), "id": seed_id(rtype)}
    for name in reference_elements(rtype)[:1] if rtype != "Patient" else []:
        body[name] = {"reference": f"Patient/{seed_id('Patient')}"}
    return body


def linked_types(types: Iterable[str]) -> set[str]:
    """The seeded types that refer to the Patient seed (what ``$everything`` may return)."""
    return {t for t in types if t != "Patient" and reference_elements(t)}


def pick_types(statement: dict[str, Any], seed: int = 11, fixed: tuple[str, ...] = FIXED_TYPES) -> tuple[str, ...]:
    """``fixed`` plus one other type the CapabilityStatement offers, picked at random with ``seed``."""
    offered = sorted(r["type"] for r in _rest(statement)["resource"])
    missing = [t for t in fixed if t not in offered]
    if missing:
        raise UnknownInteraction(f"the CapabilityStatement does not offer {missing}")
    rng = random.Random(seed)
    candidates = [t for t in offered if t not in fixed]
    rng.shuffle(candidates)
    for rtype in candidates:
        try:
            minimal_resource(rtype)
        except NoMinimalResource:
            continue
        return (*fixed, rtype)
    raise AssertionError("no resource type with a buildable body")


def _rest(statement: dict[str, Any]) -> dict[str, Any]:
    (rest,) = [r for r in statement["rest"] if r.get("mode") == "server"]
    assert isinstance(rest, dict)
    return rest


def _json(data: Any) -> bytes:
    return json.dumps(data).encode()


def _entry(method: str, url: str, resource: dict[str, Any] | None = None, **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        entry["resource"] = resource
    return entry


def _type_probes(rtype: str, declared: dict[str, Any]) -> list[Probe]:
    seed = seed_resource(rtype)  # updates write it back as it was
    rid = seed_id(rtype)
    cond = f"_id={rid}"
    fhir_json = (("Content-Type", "application/fhir+json"),)
    out: list[Probe] = []

    def add(name: str, interaction: str, needs: str | tuple[str, ...], rest: list[Call], entry: dict[str, Any] | None,
            ok: int, *, writes: bool = False, deletes: bool = False) -> None:
        needed = tuple(Need(rtype, letter) for letter in needs)  # a tuple's strings: alternatives each
        out.append(Probe(f"{rtype}-{name}", interaction, rtype, needed, tuple(rest), entry, ok, str(ok),
                         writes, deletes))  # fmt: skip

    for item in declared["interaction"]:
        code = item["code"]
        if code == "read":
            add("read", code, "r", [Call("GET", f"/{rtype}/{rid}")], _entry("GET", f"{rtype}/{rid}"), 200)
        elif code == "vread":
            add("vread", code, "r", [Call("GET", f"/{rtype}/{rid}/_history/1")],
                _entry("GET", f"{rtype}/{rid}/_history/1"), 200)
        elif code == "update":
            add("update", code, "u", [Call("PUT", f"/{rtype}/{rid}", (), fhir_json, _json(seed))],
                _entry("PUT", f"{rtype}/{rid}", seed), 200, writes=True)
            out[-1] = replace(out[-1], stored_body=True)  # the stored version, with what the gateway kept
            if declared.get("conditionalUpdate"):
                put = Call("PUT", f"/{rtype}", (("_id", rid),), fhir_json, _json(seed))
                add("update-conditional", code, "us", [put], _entry("PUT", f"{rtype}?{cond}", seed), 200, writes=True)
        elif code == "patch":
            binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
                      "data": base64.b64encode(_json(PATCH)).decode()}
            patch_json = (("Content-Type", "application/json-patch+json"),)
            patch = Call("PATCH", f"/{rtype}/{rid}", (), patch_json, _json(PATCH))
            add("patch", code, ("u", "rs"), [patch], _entry("PATCH", f"{rtype}/{rid}", binary), 200, writes=True)
        elif code == "delete":
            add("delete", code, "d", [Call("DELETE", f"/{rtype}/{rid}")], _entry("DELETE", f"{rtype}/{rid}"), 200,
                writes=True, deletes=True)
            out[-1] = replace(out[-1], entry_ok="204")
            if declared.get("conditionalDelete", "not-supported") != "not-supported":
                add("delete-conditional", code, "ds", [Call("DELETE", f"/{rtype}", (("_id", rid),))],
                    _entry("DELETE", f"{rtype}?{cond}"), 200, writes=True, deletes=True)
                out[-1] = replace(out[-1], entry_ok="204")
        elif code == "create":
            body = minimal_resource(rtype)
            add("create", code, "c", [Call("POST", f"/{rtype}", (), fhir_json, _json(body))],
                _entry("POST", rtype, body), 201, writes=True)
            if declared.get("conditionalCreate"):
                # The condition matches the seed: an allowed client gets it back (200) and nothing is written.
                add("create-conditional", code, "cs",
                    [Call("POST", f"/{rtype}", (), (*fhir_json, ("If-None-Exist", cond)), _json(body))],
                    _entry("POST", rtype, body, ifNoneExist=cond), 200)
        elif code == "search-type":
            form = (("Content-Type", "application/x-www-form-urlencoded"),)
            add("search-type", code, "s",
                [Call("GET", f"/{rtype}", (("_id", rid),)), Call("POST", f"/{rtype}/_search", (), form, cond.encode())],
                _entry("GET", f"{rtype}?{cond}"), 200)
        elif code == "history-instance":
            add("history-instance", code, "r", [Call("GET", f"/{rtype}/{rid}/_history")],
                _entry("GET", f"{rtype}/{rid}/_history"), 200)
        elif code == "history-type":
            add("history-type", code, "s", [Call("GET", f"/{rtype}/_history")], _entry("GET", f"{rtype}/_history"), 200)
        else:
            raise UnknownInteraction(f"{rtype}: no rule for interaction {code!r}")
    for operation in declared.get("operation", []):
        if rtype == "Patient" and operation["name"] == "everything":
            out.append(Probe("Patient-$everything", "operation:everything", rtype, (Need(rtype, "r"),),
                             (Call("GET", f"/Patient/{rid}/$everything"),), _entry("GET", f"Patient/{rid}/$everything"),
                             200, "200", False, filters_types=True))  # fmt: skip
        elif rtype == "Patient" and operation["name"] == "export":
            # A kick-off: the job it starts runs for whatever the client may search (tests/export).
            out.append(Probe("Patient-$export", "operation:export", rtype, (Need(rtype, "s"),),
                             (Call("GET", "/Patient/$export", (), (("Prefer", "respond-async"),)),), None, 202,
                             "202", False))  # fmt: skip
        elif operation["name"] == "validate":
            # Stores nothing; scoped as what it stands for: a create, or a delete (whose answer
            # says whether the resource is there, so r too).
            body = minimal_resource(rtype)
            add("$validate", "operation:validate", "c", [Call("POST", f"/{rtype}/$validate", (), fhir_json,
                                                              _json(body))], None, 200)  # fmt: skip
            params = {"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "delete"}]}
            add("$validate-delete", "operation:validate", "rd",
                [Call("POST", f"/{rtype}/{rid}/$validate", (), fhir_json, _json(params))], None, 200)
        else:
            raise UnknownInteraction(f"{rtype}: no rule for operation {operation['name']!r}")
    return out


def probes(statement: dict[str, Any], types: Iterable[str]) -> list[Probe]:
    """Every probe for ``types`` and the system level, as the CapabilityStatement declares them."""
    rest = _rest(statement)
    declared = {r["type"]: r for r in rest["resource"]}
    system = [item["code"] for item in rest.get("interaction", [])]
    bundle_forms = tuple(kind for kind in ("batch", "transaction") if kind in system)
    out: list[Probe] = []
    for rtype in types:
        out.extend(replace(p, forms=("rest", *bundle_forms)) if p.entry is not None else p
                   for p in _type_probes(rtype, declared[rtype]))
    for item in rest.get("interaction", []):
        code = item["code"]
        if code == "history-system":
            out.append(Probe("system-history", code, None, (Need(EVERY, "s"),), (Call("GET", "/_history"),),
                             _entry("GET", "_history"), 200, "200", False, forms=("rest", *bundle_forms)))  # fmt: skip
        elif code not in ("batch", "transaction"):  # the Bundle forms of every probe above
            raise UnknownInteraction(f"no rule for system interaction {code!r}")
    return out
