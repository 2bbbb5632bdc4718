"""Config documents: merge patch (RFC 7396), changes and their fold, validation, summaries."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import struct
from typing import Any

import pytest
from deepdiff import DeepDiff
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from configsync.domain.documents import (
    Limits,
    apply_changes,
    compute_changes,
    copy_document,
    documents_equal,
    merge_patch,
    validate_document,
)
from configsync.domain.events import summarize
from configsync.domain.names import validate_name
from configsync.errors import DocumentTooLarge, InvalidDocument, InvalidName
from configsync.events.canonical import canonical_json
from tests.strategies import documents, patches, values

# RFC 7396, Appendix A: every example, verbatim.
RFC7396_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7396_EXAMPLES)
def test_merge_patch_matches_every_rfc7396_example(target: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(target, patch) == expected


@given(target=documents, patch=patches)
def test_merge_patch_semantics(target: dict[str, Any], patch: dict[str, Any]) -> None:
    before = json.dumps(target, sort_keys=True)
    result = merge_patch(target, patch)
    assert isinstance(result, dict)
    for key, value in patch.items():
        if value is None:
            assert key not in result  # null removes
        elif isinstance(value, dict):
            assert result[key] == merge_patch(target.get(key), value)  # objects merge
        else:
            assert documents_equal(result[key], value)  # anything else, arrays too, replaces
    for key in target.keys() - patch.keys():
        assert documents_equal(result[key], target[key])  # untouched keys stay
    assert json.dumps(target, sort_keys=True) == before  # the target is not modified


@given(a=documents, b=documents)
@settings(max_examples=300)
def test_applying_the_changes_from_a_to_b_gives_b(a: dict[str, Any], b: dict[str, Any]) -> None:
    changes = compute_changes(a, b)
    assert documents_equal(apply_changes(copy_document(a), changes), b)
    # the stored form is plain JSON
    assert json.loads(json.dumps(changes)) == changes


_whole = st.builds(  # what compute_changes does not make: the whole document replaced, then a
    lambda d, value: [  # key set inside an object the event itself creates
        {"op": "replace", "path": [], "value": d},
        {"op": "add", "path": ["\u2603 new", "inner"], "value": value},
    ],
    documents,
    values,
)


@given(a=documents, b=documents, c=documents, odd=_whole)
@settings(max_examples=300)
def test_applied_is_apply_changes_on_a_copy_and_leaves_the_document_alone(
    a: dict[str, Any], b: dict[str, Any], c: dict[str, Any], odd: list[dict[str, Any]]
) -> None:
    """`applied` (a write's next document, sharing what its changes do not touch) gives what
    `apply_changes` gives on a deep copy, for one event and for a chain of them, and changes
    neither the document it started from nor the changes' values."""
    from configsync.domain.documents import applied

    def text(document: Any) -> str:
        return json.dumps(document, sort_keys=True)

    first, second = compute_changes(a, b), compute_changes(b, c)
    before_a = text(a)
    after_first = applied(a, first)
    assert text(after_first) == text(apply_changes(copy_document(a), first))
    after_second = applied(after_first, second)
    assert text(after_second) == text(apply_changes(copy_document(b), second))
    assert documents_equal(after_second, c)
    assert text(a) == before_a
    assert documents_equal(after_first, b)  # the second event did not reach into the first's
    assume("\u2603 new" not in odd[0]["value"])
    for changes in (odd, [*first, *odd]):
        expected = apply_changes(copy_document(a), copy.deepcopy(changes))
        changes_before = text(changes)
        assert text(applied(a, changes)) == text(expected)
        assert text(a) == before_a and text(changes) == changes_before


@given(a=documents)
def test_changes_between_equal_documents_are_empty(a: dict[str, Any]) -> None:
    assert compute_changes(a, copy_document(a)) == []


@given(a=documents, b=documents)
def test_changes_come_in_a_stable_order_and_never_overlap(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    changes = compute_changes(a, b)
    assert changes == compute_changes(a, b)
    paths = [tuple(c["path"]) for c in changes]
    assert paths == sorted(paths)
    for p in paths:
        assert not any(q != p and q[: len(p)] == p for q in paths)


def deepdiff_paths(old: dict[str, Any], new: dict[str, Any]) -> set[tuple[str, ...]]:
    """The oracle: the paths DeepDiff says differ, cut at arrays (arrays are values) and at the
    outermost changed value, as the changes name them. (Keys such as `__x` are data here, not
    private attributes: ignore_private_variables=False.)"""
    found: set[tuple[str, ...]] = set()
    tree = DeepDiff(
        old, new, view="tree", threshold_to_diff_deeper=0, ignore_private_variables=False
    )
    for levels in tree.values():
        for level in levels:
            path = level.path(output_format="list")
            cut = next((i for i, part in enumerate(path) if isinstance(part, int)), len(path))
            found.add(tuple(path[:cut]))
    return {p for p in found if not any(q != p and p[: len(q)] == q for q in found)}


@given(a=documents, b=documents)
@settings(max_examples=300)
def test_the_changes_name_the_paths_deepdiff_finds(a: dict[str, Any], b: dict[str, Any]) -> None:
    """DeepDiff, an independent implementation, as the oracle of compute_changes: every path it
    finds is changed, and any other changed path holds values Python calls equal but JSON does
    not (1 and 1.0, 0 and false, 0.0 and -0.0), which DeepDiff cannot see."""
    changes = compute_changes(a, b)
    ours = {tuple(c["path"]) for c in changes}
    oracle = deepdiff_paths(a, b)
    assert oracle <= ours
    for change in changes:
        if tuple(change["path"]) not in oracle:
            assert change["op"] == "replace" and change["old"] == change["value"], (a, b, oracle)


def test_changes_name_each_key_that_differs() -> None:
    old = {"API_URL": "https://a", "TIMEOUT": 30, "db": {"host": "x", "port": 5432}, "gone": 1}
    new = {"API_URL": "https://b", "TIMEOUT": 30, "db": {"host": "x", "port": 6432}, "RETRIES": 3}
    assert compute_changes(old, new) == [
        {"op": "replace", "path": ["API_URL"], "value": "https://b", "old": "https://a"},
        {"op": "add", "path": ["RETRIES"], "value": 3},
        {"op": "replace", "path": ["db", "port"], "value": 6432, "old": 5432},
        {"op": "remove", "path": ["gone"], "old": 1},
    ]


def test_an_array_that_changes_is_replaced_whole() -> None:
    assert compute_changes({"hosts": ["a", "b", "c"]}, {"hosts": ["a", "c"]}) == [
        {"op": "replace", "path": ["hosts"], "value": ["a", "c"], "old": ["a", "b", "c"]}
    ]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"a": 1}, {"a": 1.0}),
        ({"a": True}, {"a": 1}),
        ({"a": 0.0}, {"a": -0.0}),
        ({"a": 0}, {"a": False}),
    ],
)
def test_json_distinguishes_what_python_equality_does_not(old: Any, new: Any) -> None:
    assert not documents_equal(old, new)
    changes = compute_changes(old, new)
    assert changes
    assert json.dumps(apply_changes(copy_document(old), changes)) == json.dumps(new)


@given(a=documents, b=documents, twin=st.booleans())
@settings(max_examples=300)
def test_documents_are_equal_exactly_when_their_canonical_json_is(
    a: dict[str, Any], b: dict[str, Any], twin: bool
) -> None:
    """documents_equal's shortcut (Python's == first) must not change its answer: the oracle is
    the canonical JSON, which tells 1, 1.0 and true apart."""
    other = copy_document(a) if twin else b
    assert documents_equal(a, other) == (canonical_json(a) == canonical_json(other))


def test_summary_counts_and_names_changes() -> None:
    changes = compute_changes({"A": 1, "B": 2, "C": 3}, {"A": 2, "C": 3, "D": 4, "E": {"F": 1}})
    assert summarize(changes) == "+2 ~1 -1: A, B, D, E"
    assert summarize([]) == "+0 ~0 -0"
    many = compute_changes({}, {f"K{i:02}": i for i in range(12)})
    assert summarize(many).endswith("K09 and 2 more")


LIMITS = Limits(max_bytes=1024, max_keys=10, max_depth=4)


@pytest.mark.parametrize(
    ("document", "error", "message"),
    [
        ([1, 2], InvalidDocument, "must be a JSON object, not an array"),
        ("text", InvalidDocument, "not a string"),
        (None, InvalidDocument, "not null"),
        ({"a": {"b": {"c": {"d": {}}}}}, InvalidDocument, "nested more than 4 levels"),
        ({f"k{i}": i for i in range(11)}, InvalidDocument, "11 keys; the limit is 10"),
        ({"a": "x" * 2000}, DocumentTooLarge, "the limit is 1024 bytes"),
        ({"a": float("inf")}, InvalidDocument, "finite"),
        ({"a": "\ud800"}, InvalidDocument, "lone surrogate"),
        ({"a": "\x00"}, InvalidDocument, "NUL"),
    ],
)
def test_invalid_documents_are_refused_with_a_clear_message(
    document: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        validate_document(document, LIMITS)


def test_ten_thousand_levels_of_nesting_are_refused_without_recursion() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(10_000):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(InvalidDocument, match="nested more than 20 levels"):
        validate_document(deep, Limits())


@given(st.dictionaries(st.sampled_from(["a", "b"]), values, max_size=2))
def test_validate_returns_the_canonical_json(document: dict[str, Any]) -> None:
    try:
        text = validate_document(document, Limits(max_depth=50, max_keys=100_000))
    except DocumentTooLarge:
        return
    assert json.loads(text) == json.loads(json.dumps(document))


@pytest.mark.parametrize("name", ["payment-service", "a", "svc.v2_x", "0abc", "a" * 63])
def test_good_names_pass(name: str) -> None:
    assert validate_name("service", name) == name


@pytest.mark.parametrize("name", ["", "-a", "_a", ".a", "A", "a/b", "a b", "a" * 64, "é", "a\n"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName, match="invalid service name"):
        validate_name("service", name)


class _Keyed(dict):  # type: ignore[type-arg]
    """A dict subclass: plain JSON to check_json, which the fast path leaves to it."""


_awkward_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities included: refused
    st.text(),  # U+0000 and lone surrogates included: refused
    st.sampled_from(["\x00", "a\x00", "\ud800", "x\udfff"]),  # refused
    st.sampled_from(["\\u0000", "a\\u0000b", "\\\\u0000"]),  # look escaped, are not: kept
)
_awkward_keys = st.one_of(st.text(max_size=4), st.integers(0, 3), st.sampled_from([None, 1.5]))
_awkward = st.recursive(
    _awkward_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
        st.dictionaries(_awkward_keys, inner, max_size=3),
        st.dictionaries(st.text(max_size=4), inner, max_size=3).map(_Keyed),
        st.just({1}),  # not JSON at all
    ),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(_awkward)
def test_canonical_json_refuses_and_serializes_as_checking_every_value_first_would(
    value: Any,
) -> None:
    """The serialize-then-check path gives the text, or refuses the value, exactly when
    check_json over every value followed by json.dumps does."""
    from configsync.events.canonical import check_json

    try:
        check_json(value)
    except InvalidDocument as refused:
        with pytest.raises(InvalidDocument) as raised:
            canonical_json(value)
        assert str(raised.value) == str(refused)
        return
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected


_floatless = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text()),  # beyond 64 bits, NUL, ...
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)


@settings(max_examples=1000, deadline=None)
@given(_floatless)
def test_canonical_json_without_floats_is_the_standard_librarys_text(value: Any) -> None:
    """Values with no float are serialized by orjson (configsync.events.canonical): the text
    is json.dumps's to the character, and what it refuses (U+0000, lone surrogates) it refuses
    as check_json words it; integers beyond 64 bits go the standard library's way."""
    from configsync.events.canonical import _floatless as floatless
    from configsync.events.canonical import check_json

    assert floatless(value)
    try:
        check_json(value)
    except InvalidDocument as refused:
        with pytest.raises(InvalidDocument, match=re.escape(str(refused))):
            canonical_json(value)
        return
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected


_parsed = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),  # beyond 64 bits too
        st.floats(allow_nan=False, allow_infinity=False),  # -0.0, subnormals, 1e308
        st.text(),  # lone surrogates too
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, with every value of the same type, and floats equal to the bit (-0.0 too)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return bool(a == b)


@settings(max_examples=1000, deadline=None)
@given(_parsed, st.booleans())
def test_loads_gives_the_standard_librarys_value(value: Any, ascii_only: bool) -> None:
    """configsync.events.canonical.loads parses with orjson, and with json.loads what orjson
    refuses: the value is json.loads's, types, key order and floats to the bit included, for
    texts as the store writes them and as json.dumps writes them (escapes, surrogates, big
    integers, NaN and Infinity)."""
    from configsync.events.canonical import loads

    texts = [json.dumps(value, ensure_ascii=ascii_only)]
    with contextlib.suppress(InvalidDocument, ValueError):
        texts.append(canonical_json(value))
    for text in texts:
        assert _same(loads(text), json.loads(text))
        with contextlib.suppress(UnicodeEncodeError):  # a raw lone surrogate is not UTF-8
            assert _same(loads(text.encode()), json.loads(text))


@pytest.mark.parametrize("text", ["NaN", "[Infinity, -Infinity]", '{"a": 1e400}', "1" * 30])
def test_loads_takes_what_only_the_standard_library_does(text: str) -> None:
    from configsync.events.canonical import loads

    assert repr(loads(text)) == repr(json.loads(text))
