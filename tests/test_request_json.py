"""A request body reads the same whichever JSON reader takes it.

orjson reads plain UTF-8 bodies; json reads whatever orjson refuses or might read differently. For every body here,
generated or hostile, the document (with its types: an integer stays an integer, -0.0 keeps its sign) or the 400
is the one json alone gives, as `_read_careful` applies it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook import request as hook_request
from webhook.outcome import HookError

EXTERNAL = sorted((Path(__file__).parent / "fixtures" / "external").rglob("*.json"))
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.text(), st.floats(allow_nan=True, allow_infinity=True),
              st.integers(min_value=-(10 ** 40), max_value=10 ** 40),
              st.sampled_from([2 ** 63 - 1, 2 ** 63, -(2 ** 63), -(2 ** 63) - 1, 2 ** 64 - 1, 2 ** 64, -0.0, 1e-05,
                               5e-324, 1.7976931348623157e308, 0.1 + 0.2, 123456789012345678])),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=24,
)

HOSTILE_BODIES = [
    b'{"a": NaN}', b'{"a": -Infinity}', b'{"a": 1e400}', b'\xef\xbb\xbf{"a": 1}', b'{"a": "\\ud800"}',
    b'{"a": "\xed\xa0\x80"}', b'{"a": "\\udc00\\ud800"}', b'{"a": "\\ud83d\\ude00"}', b'{"a": "\xc3"}',
    b'{"a": 18446744073709551616}', b'{"a": -9223372036854775809}', b'{"a": 1234567890123456789012345678901}',
    b'{"a": 1.00000000000000000000001}', b'{"a": 1, "a": 2}', b'{"a": 01}', b'{"a": "\x01"}', b'{"a": 1} x',
    b'', b' ', b'"text"', b'[' * 65 + b']' * 65, b'[' * 64 + b']' * 64, b'[' * 2000 + b']' * 2000,
    b'{"id": "12345678901234567890"}', '{"a": "é"}'.encode("utf-16"), '{"a": 1}'.encode("utf-32-le"),
    b'{"a": -0, "b": -0.0, "c": 0e0, "d": 1E2, "e": 1e-7}', b' \t\r\n{"a":[ ]}\n',
]


def outcome(read, body: bytes) -> tuple[str, str]:
    try:
        document = read(body)
    except HookError as error:
        return "refused", str(error)
    return "read", json.dumps(document)  # ASCII escapes, so a lone surrogate is compared too


@pytest.mark.parametrize("path", EXTERNAL, ids=lambda p: p.name)
def test_real_clients_bodies_read_through_orjson_the_same(path: Path) -> None:
    body = path.read_bytes()
    if hook_request._read_plain(body) is hook_request._NOT_PLAIN:
        pytest.skip("not a body orjson takes")
    assert outcome(hook_request.load_json, body) == outcome(hook_request._read_careful, body)


@pytest.mark.parametrize("body", HOSTILE_BODIES)
def test_a_hostile_body_is_read_or_refused_as_json_alone_would(body: bytes) -> None:
    assert outcome(hook_request.load_json, body) == outcome(hook_request._read_careful, body)


def test_an_integer_beyond_64_bits_stays_an_integer() -> None:
    for value in (2 ** 64, -(2 ** 63) - 1, 10 ** 30):
        document = hook_request.load_json(json.dumps({"a": value}).encode())
        assert document == {"a": value} and isinstance(document["a"], int)


@settings(max_examples=400)
@given(value=JSON_VALUES, spaced=st.booleans(), encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
def test_any_json_text_reads_as_json_reads_it(value: object, spaced: bool, encoding: str) -> None:
    text = json.dumps(value, ensure_ascii=False, indent=1 if spaced else None)
    try:
        body = text.encode(encoding)
    except UnicodeEncodeError:  # a lone surrogate cannot be UTF-8: send it as the escape instead
        body = json.dumps(value).encode()
    assert outcome(hook_request.load_json, body) == outcome(hook_request._read_careful, body)


@settings(max_examples=300)
@given(cut=st.integers(min_value=0, max_value=400), byte=st.integers(min_value=0, max_value=255))
def test_a_body_broken_anywhere_reads_as_json_reads_it(cut: int, byte: int) -> None:
    body = json.dumps({"resourceType": "Observation", "valueQuantity": {"value": 12.5, "unit": "10*9/L"},
                       "note": [{"text": "é \u2028"}], "n": [1, -0.0, 2e-3, True, None]}).encode()
    cut %= len(body)
    for broken in (body[:cut], body[:cut] + bytes([byte]) + body[cut + 1:], body[:cut] + bytes([byte]) + body[cut:]):
        assert outcome(hook_request.load_json, broken) == outcome(hook_request._read_careful, broken)

