"""The JSON body check: it refuses exactly the strings the store cannot hold, wherever they are,
however the client escaped them, and hands on the value json.loads gives."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from configsync.errors import InvalidInput
from configsync.hygiene import MALFORMED, _check_strings, check_json_body

# Any code point, lone surrogates and U+0000 included (hypothesis leaves surrogates out unless
# asked), and often one of the two the store refuses.
ANY_TEXT = st.text(
    st.one_of(
        st.characters(exclude_categories=[]),
        st.sampled_from(["\x00", "\ud800", "\udfff", "\ud83d"]),
    ),
    max_size=8,
)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


def _refused(check: Any) -> bool:
    try:
        check()
    except InvalidInput:
        return True
    return False


@given(VALUES, st.booleans())
def test_the_body_check_refuses_exactly_what_the_walk_over_every_string_refuses(
    value: Any, ascii_only: bool
) -> None:
    try:
        raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    except UnicodeEncodeError:
        assume(False)  # a lone surrogate has no UTF-8: only its \\u escape can carry it
    refused = _refused(lambda: check_json_body(raw))
    assert refused == _refused(lambda: _check_strings(value))
    if not refused:
        assert check_json_body(raw) == json.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [b'{"a": "x\\u0000"}', b'{"\\u0000": 1}', b'["\\ud800"]', b'{"a": {"b": ["\\uDC00x"]}}'],
)
def test_escaped_nul_and_lone_surrogates_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        check_json_body(raw)


def test_an_escaped_backslash_before_u0000_is_text_and_a_pair_is_a_character() -> None:
    assert check_json_body(b'{"a": "\\\\u0000"}') == {"a": "\\u0000"}
    assert check_json_body(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}
    assert check_json_body(b'{"a": ') is MALFORMED
