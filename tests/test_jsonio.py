"""``gateway.jsonio``: number literals a float would rewrite survive a parse and a dump; others cost nothing."""

from __future__ import annotations

import copy
import pickle
import random

import orjson
import pytest

from gateway.jsonio import DecimalLiteral, dumps, loads, may_need_literals

KEPT = ["5.40", "1.50E2", "1e5", "-2.5e-3", "0.1000000000000000055511151231257827", "0.000001", "0.0000001",
        "123456789012345678901234567890", "-18446744073709551616", "1234567890.123456", "100.00"]
PLAIN = ["5.4", "1.0", "0", "-0.5", "150.0", "0.00001", "12", "-7", "123456789012345", "1234567890123456"]
#: Plain numbers the scan cannot tell from long literals (it errs wide): parsed twice, still plain.
LONG_PLAIN = ["18446744073709551615", "0.30000000000000004"]


@pytest.mark.parametrize("literal", KEPT + PLAIN + LONG_PLAIN)
def test_every_literal_is_written_back_as_it_came(literal: str) -> None:
    doc = b'{"a":[' + literal.encode() + b',{"v": ' + literal.encode() + b"}]}"
    assert dumps(loads(doc)) == doc.replace(b": ", b":")
    assert loads(doc)["a"][0] == orjson.loads(doc)["a"][0]  # the same value to arithmetic and search


@pytest.mark.parametrize("literal", PLAIN + LONG_PLAIN)
def test_a_float_that_keeps_its_literal_is_a_plain_float_or_int(literal: str) -> None:
    doc = b"[" + literal.encode() + b"]"
    assert type(loads(doc)[0]) in (int, float)
    assert may_need_literals(doc) is (literal in LONG_PLAIN)


def test_random_literals_round_trip_and_the_scan_misses_none() -> None:
    rnd = random.Random(7)
    for _ in range(20_000):
        whole = str(rnd.choice([0, rnd.randint(0, 9), rnd.randint(0, 10 ** rnd.randint(1, 22))]))
        fraction = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(0, 20)))
        literal = whole + ("." + fraction if fraction else "")
        if rnd.random() < 0.1:
            literal += rnd.choice("eE") + rnd.choice(["", "+", "-"]) + str(rnd.randint(0, 30))
        if rnd.random() < 0.3 and literal != "0":
            literal = "-" + literal
        doc = b'{"v":' + literal.encode() + b"}"
        assert dumps(loads(doc)) == doc
        if not may_need_literals(doc):
            assert orjson.dumps(orjson.loads(doc)) == doc


def test_strings_that_look_like_numbers_are_strings() -> None:
    doc = b'{"t":"10:00:00.120Z","n":"5.40","x":[1.50E2,"1.50E2"]}'
    assert dumps(loads(doc)) == doc and loads(doc)["n"] == "5.40"


@pytest.mark.parametrize("bad", [b"", b"[5.40", b"[NaN]", b"[1E400, 5.40]", b'["\\ud800", 5.40]', b"{5.40}"])
def test_invalid_json_fails_as_with_orjson(bad: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        loads(bad)


def test_a_deep_document_with_a_literal_still_parses() -> None:
    doc = b"[" * 1000 + b"5.40" + b"]" * 1000
    assert isinstance(loads(doc), list)


def test_a_literal_is_a_float_that_copies_and_pickles_with_its_text() -> None:
    value = DecimalLiteral("5.40")
    assert value == 5.4 and value * 2 == 10.8 and str(value) == "5.4" and hash(value) == hash(5.4)
    for copied in (copy.copy(value), copy.deepcopy([value])[0], pickle.loads(pickle.dumps(value))):
        assert isinstance(copied, DecimalLiteral) and copied.text == "5.40"
    assert dumps({"v": value}, option=orjson.OPT_SORT_KEYS) == b'{"v":5.40}'


@pytest.mark.parametrize("text", ["1_000", " 5.40", "inf", "NaN", "+1.0", ".5", "05.40", "5.40,1"])
def test_a_literal_is_only_ever_a_json_number(text: str) -> None:
    with pytest.raises(ValueError):
        DecimalLiteral(text)


def test_anything_else_orjson_cannot_write_still_fails() -> None:
    with pytest.raises(TypeError):
        dumps({"v": object()})
