"""The SQL of a data policy (``gateway.search.policy``): which rows a client may see.

Two shapes of the same rule, for the two ways the store asks:

* ``visible_probe``: a condition on one candidate row (``alias.rid``/``alias.id``),
  answered from the row-id indexes: a read, an include, a search's candidates, history;
* ``visible_rids``: the set of visible row ids of a type, driven from the policy's
  Organizations, districts and Patients through the target indexes: a search with no
  selective criterion of its own.

A Patient is visible when its ``organization`` reference is in the policy's
Organizations' subtree (``partOf``, any depth), an ``address`` part equals one of its
districts, or its id is listed. A golden record (``GOLDEN_TAG_SYSTEM``) is visible only when
its id is listed: it joins what several sources know of a person, Patients the policy hides
among them, whatever organisation or district it took from one of them. Another restricted
type's resource is visible when one of its indexed references points at a live visible Patient.
Deleting a resource removes its index rows, so index rows always belong to live resources.
"""

from __future__ import annotations

from typing import Any

from gateway.search.policy import GOLDEN_TAG_CODE, GOLDEN_TAG_SYSTEM, DataPolicy, RowFilter

Params = list[Any]


def subtree_sql(policy: DataPolicy) -> tuple[str, Params]:
    """Ids of the policy's Organizations and every Organization below them (``partOf``)."""
    roots = " UNION ".join("SELECT CAST(? AS TEXT)" for _ in policy.organizations)
    sql = (
        f"WITH RECURSIVE pol_sub(id) AS ({roots} UNION SELECT pol_c.id FROM pol_sub"
        " JOIN idx_ref pol_y ON pol_y.ttype = 'Organization' AND pol_y.tid = pol_sub.id"
        " AND pol_y.rtype = 'Organization' AND pol_y.param = 'partof'"
        " JOIN resources pol_c ON pol_c.rid = pol_y.rid) SELECT pol_sub.id FROM pol_sub"
    )
    return sql, list(policy.organizations)


def _subtree(policy: RowFilter) -> tuple[str, Params]:
    # A looked-up subtree is a plain list: planners then treat it as the constant it is
    # (PostgreSQL would otherwise run the recursive walk once per candidate row).
    if policy.subtree is not None:
        return ", ".join("?" for _ in policy.subtree) or "NULL", list(policy.subtree)
    return subtree_sql(policy.policy)


def _not_golden(rid: str) -> tuple[str, Params]:
    """A condition true when the Patient row ``rid`` is no golden record (its ``_tag`` row)."""
    return (f"NOT EXISTS (SELECT 1 FROM idx_token pol_g WHERE pol_g.rid = {rid} AND pol_g.param = '_tag'"
            " AND pol_g.code = ? AND pol_g.system = ?)", [GOLDEN_TAG_CODE, GOLDEN_TAG_SYSTEM])


def _patient_probe(row_filter: RowFilter, alias: str) -> tuple[str, Params]:
    """Is the live Patient row ``alias`` visible?"""
    policy = row_filter.policy
    ors: list[str] = []
    params: Params = []
    if policy.organizations:
        subtree, subtree_params = _subtree(row_filter)
        ors.append(f"EXISTS (SELECT 1 FROM idx_ref pol_o WHERE pol_o.rid = {alias}.rid"
                   " AND pol_o.param = 'organization' AND pol_o.ttype = 'Organization'"
                   f" AND pol_o.tid IN ({subtree}))")
        params.extend(subtree_params)
    if policy.districts:
        keys = policy.district_keys
        ors.append(f"EXISTS (SELECT 1 FROM idx_string pol_s WHERE pol_s.rid = {alias}.rid AND pol_s.param = 'address'"
                   f" AND pol_s.norm IN ({', '.join('?' for _ in keys)}))")
        params.extend(keys)
    if ors:
        golden, golden_params = _not_golden(f"{alias}.rid")
        ors = [f"(({' OR '.join(ors)}) AND {golden})"]
        params.extend(golden_params)
    if policy.patients:
        ors.append(f"{alias}.id IN ({', '.join('?' for _ in policy.patients)})")
        params.extend(policy.patients)
    return f"({' OR '.join(ors)})", params


def visible_probe(policy: RowFilter | None, rtype: str, alias: str) -> tuple[str, Params] | None:
    """A condition true when the live ``rtype`` row ``alias`` is visible; None: every row is."""
    if policy is None or not policy.policy.limits_rows or not policy.applies_to(rtype):
        return None
    if rtype == "Patient":
        return _patient_probe(policy, alias)
    patient, params = _patient_probe(policy, "pol_vp")
    return (f"EXISTS (SELECT 1 FROM idx_ref pol_v JOIN resources pol_vp ON pol_vp.rtype = 'Patient'"
            f" AND pol_vp.id = pol_v.tid AND pol_vp.deleted = 0 WHERE pol_v.rid = {alias}.rid"
            f" AND pol_v.ttype = 'Patient' AND {patient})", params)


def _patient_rids(row_filter: RowFilter) -> tuple[str, Params]:
    """Row ids of the visible Patients, from the indexes the policy names."""
    policy = row_filter.policy
    parts: list[str] = []
    params: Params = []
    if policy.organizations:
        subtree, subtree_params = _subtree(row_filter)
        golden, golden_params = _not_golden("pol_o.rid")
        parts.append("SELECT pol_o.rid FROM idx_ref pol_o WHERE pol_o.rtype = 'Patient'"
                     f" AND pol_o.param = 'organization' AND pol_o.ttype = 'Organization' AND pol_o.tid IN ({subtree})"
                     f" AND {golden}")
        params.extend([*subtree_params, *golden_params])
    if policy.districts:
        keys = policy.district_keys
        golden, golden_params = _not_golden("pol_s.rid")
        parts.append("SELECT pol_s.rid FROM idx_string pol_s WHERE pol_s.rtype = 'Patient' AND pol_s.param = 'address'"
                     f" AND pol_s.norm IN ({', '.join('?' for _ in keys)}) AND {golden}")
        params.extend([*keys, *golden_params])
    if policy.patients:
        parts.append("SELECT pol_i.rid FROM resources pol_i WHERE pol_i.rtype = 'Patient' AND pol_i.deleted = 0"
                     f" AND pol_i.id IN ({', '.join('?' for _ in policy.patients)})")
        params.extend(policy.patients)
    if len(parts) == 1:
        return parts[0], params
    # Wrapped: compound operators chain left to right, so a bare UNION inside an INTERSECT
    # of the caller's would change its meaning.
    return f"SELECT pol_u.rid FROM ({' UNION '.join(parts)}) pol_u", params


def visible_rids(policy: RowFilter | None, rtype: str) -> tuple[str, Params] | None:
    """Row ids of the live ``rtype`` resources ``policy`` lets the client see; None: all of them."""
    if policy is None or not policy.policy.limits_rows or not policy.applies_to(rtype):
        return None
    patients, params = _patient_rids(policy)
    if rtype == "Patient":
        return patients, params
    # Naming the parameters lets the (rtype, param, tid) index find each Patient's rows; without
    # them SQLite scans every reference of the type once per Patient.
    links = policy.links[rtype]
    return ("SELECT DISTINCT pol_v.rid FROM resources pol_vp JOIN idx_ref pol_v ON pol_v.rtype = ?"
            f" AND pol_v.param IN ({', '.join('?' for _ in links)}) AND pol_v.tid = pol_vp.id"
            f" AND pol_v.ttype = 'Patient' WHERE pol_vp.rid IN ({patients})", [rtype, *links, *params])


def visible_rows(policy: RowFilter | None, alias: str) -> tuple[str, Params] | None:
    """A condition on rows ``alias`` of any type (``rtype``, ``id`` columns, e.g. history rows): the
    resource, as it is now, is visible. None: no condition."""
    if policy is None or not policy.policy.limits_rows:
        return None
    patient, patient_params = _patient_probe(policy, "pol_cur")
    other, other_params = _patient_probe(policy, "pol_vp")
    restricted = sorted(policy.restricted - {"Patient"})
    marks = ", ".join("?" for _ in restricted)
    sql = (
        f"({alias}.rtype NOT IN ('Patient', {marks})"
        f" OR ({alias}.rtype = 'Patient' AND EXISTS (SELECT 1 FROM resources pol_cur WHERE pol_cur.rtype = 'Patient'"
        f" AND pol_cur.id = {alias}.id AND pol_cur.deleted = 0 AND {patient}))"
        f" OR ({alias}.rtype <> 'Patient' AND EXISTS (SELECT 1 FROM resources pol_cur"
        " JOIN idx_ref pol_v ON pol_v.rid = pol_cur.rid AND pol_v.ttype = 'Patient'"
        " JOIN resources pol_vp ON pol_vp.rtype = 'Patient' AND pol_vp.id = pol_v.tid AND pol_vp.deleted = 0"
        f" WHERE pol_cur.rtype = {alias}.rtype AND pol_cur.id = {alias}.id AND {other})))"
    )
    return sql, [*restricted, *patient_params, *other_params]
