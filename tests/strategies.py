"""Hypothesis strategies for JSON documents."""

from __future__ import annotations

from hypothesis import strategies as st

from configsync.domain.secrets import ENVELOPE_KEY

# Strings the store accepts: any Unicode but NUL and lone surrogates.
text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
# Some keys name secrets (by the default patterns): their values are sealed when stored. The
# envelope's key is not a key a document may hold (the store refuses it: tests/test_secrets.py),
# and Hypothesis, which draws strings from the code under test, does find it.
keys = st.one_of(
    st.sampled_from(
        ["a", "b", "API_URL", "TIMEOUT", "ключ", "a.b", "x y", "DB_PASSWORD", "api_token", "S_KEY"]
    ),
    text,
).filter(lambda key: key != ENVELOPE_KEY)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=12,
)
documents = st.dictionaries(keys, values, max_size=6)
# Patches without nulls inside arrays matter not: RFC 7396 treats arrays as plain values.
patches = st.dictionaries(keys, st.one_of(st.none(), values), max_size=5)
