"""Sync tokens: what `encode` writes `parse` reads back, whatever was encoded before (the
last encoding is kept for the many long-polls woken by one change), and garbage is an
M_INVALID_PARAM."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeserver.errors import MatrixError
from sync.tokens import StreamToken

positions = st.integers(min_value=0, max_value=2**53)
tokens = st.builds(StreamToken, positions, positions, positions, positions, positions, positions, positions)


@settings(max_examples=300, deadline=None)
@given(st.lists(tokens, min_size=1, max_size=20))
def test_encode_then_parse_round_trips_in_any_order(sequence):
    for token in sequence:
        text = token.encode()
        assert text == "s" + "_".join(str(p) for p in token)
        assert StreamToken.parse(text) == token


@pytest.mark.parametrize("garbage", ["", "x1_2", "s", "s1_-2", "s1_2_3_4_5_6_7_8", "s1__2", "sa_b"])
def test_garbage_is_an_invalid_param(garbage):
    with pytest.raises(MatrixError) as e:
        StreamToken.parse(garbage)
    assert e.value.errcode == "M_INVALID_PARAM"
