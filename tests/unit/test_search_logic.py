"""The pure parts of search: visibility as stream ranges (must agree with may_see), the
search-term grammar and its tsquery text, pagination tokens, text folding and extraction."""
import re

import pytest
from hypothesis import given, settings, strategies as st

from homeserver.errors import MatrixError
from homeserver.search import decode_token, encode_token
from homeserver.search_terms import parse_search_term, words_in
from homeserver.visibility import OPEN_END, UserRoomHistory
from storage.search import Hit, clean, fold, replace_target, searchable_text

MEMBERSHIPS = st.sampled_from(["join", "leave", "invite", "ban", "knock"])
VISIBILITIES = st.sampled_from(["shared", "joined", "invited", "world_readable"])


@st.composite
def histories(draw):
    """A user's memberships and a room's visibility changes at distinct stream positions."""
    positions = draw(st.lists(st.integers(1, 60), unique=True, max_size=12))
    kinds = draw(st.lists(st.booleans(), min_size=len(positions), max_size=len(positions)))
    memberships = sorted((p, draw(MEMBERSHIPS)) for p, k in zip(positions, kinds) if k)
    visibilities = sorted((p, draw(VISIBILITIES)) for p, k in zip(positions, kinds) if not k)
    return UserRoomHistory(memberships, visibilities, "@u:x")


@settings(max_examples=500, deadline=None)
@given(histories())
def test_visible_ranges_agree_with_visible_at_everywhere(hist):
    ranges = hist.visible_ranges()
    # Sorted, disjoint, not touching (merged), and only the last may be open.
    for (lo1, hi1), (lo2, _) in zip(ranges, ranges[1:]):
        assert lo1 <= hi1 < lo2 - 1
    assert all(hi < OPEN_END for _, hi in ranges[:-1])
    for so in range(1, 70):
        inside = any(lo <= so <= hi for lo, hi in ranges)
        assert inside == hist.visible_at(so), (so, ranges)
    assert any(lo <= OPEN_END - 1 <= hi for lo, hi in ranges) == hist.visible_at(10**9)


def test_visible_ranges_examples():
    # Shared history up to leaving: everything before the leave.
    assert UserRoomHistory([(5, "join"), (9, "leave")], [], "@u:x").visible_ranges() == [(1, 8)]
    # Joined-only history: from the join, open-ended while joined; what came before the
    # change to `joined` was shared with whoever joins later.
    assert UserRoomHistory([(7, "join")], [(2, "joined")], "@u:x").visible_ranges() == [(1, 2), (7, OPEN_END)]
    # World-readable from the change on, even for someone who left.
    assert UserRoomHistory([(3, "join"), (4, "leave")], [(2, "joined"), (10, "world_readable")],
                           "@u:x").visible_ranges() == [(1, 3), (11, OPEN_END)]


# ---- search terms ------------------------------------------------------------------------

QUOTED = r"'(?:[^'\\]|''|\\.)+'"


@pytest.mark.parametrize("term, tsquery", [
    ("Invoice", "'invoice':*"),
    ("invoice  late", "'invoice':* & 'late':*"),
    ("a OR b c", "('a':* | 'b':*) & 'c':*"),
    ("OR a OR", "'a':*"),
    ('"are late" x', "('are' <-> 'late') & 'x':*"),
    ('"unterminated phrase', "('unterminated' <-> 'phrase')"),
    ("a -b -\"c d\"", "'a':* & !'b':* & !('c' <-> 'd')"),  # what "b" would find
    ("it's", "'it''s':*"),
    ("back\\slash", "'back\\\\slash':*"),
    ("Café MÜLLER straße", "'cafe':* & 'muller':* & 'strasse':*"),
    ("-only -negations", ""),
    ("   ", ""),
    ("\u0301 \x00", ""),
    ("a\u00a8b", "('a':* <-> 'b':*)"),  # folding turns the diaeresis into a space
])
def test_search_term_examples(term, tsquery):
    assert parse_search_term(term).tsquery == tsquery


def test_ranking_ignores_negations_and_highlights_take_positive_words():
    parsed = parse_search_term('budget OR "q3 plan" -draft')
    assert parsed.rank_tsquery == "('budget':* | ('q3' <-> 'plan'))"
    assert parsed.highlight_queries == ["'budget':*", "'q3'", "'plan'"]


@settings(max_examples=500)
@given(st.text(max_size=80) | st.text(alphabet="'\"\\-OR :*&|!()<>\u0301\u00a8 ab", max_size=40))
def test_every_lexeme_is_quoted_and_non_empty(term):
    """The tsquery holds only quoted, non-empty lexemes joined by our own operators, so
    nothing a user types can be a tsquery syntax error."""
    parsed = parse_search_term(term)
    skeleton = re.sub(QUOTED, "L", parsed.tsquery)
    assert re.fullmatch(r"[L:*&|!()<\-> ]*", skeleton), parsed.tsquery
    assert "''" not in re.sub(QUOTED, "", parsed.tsquery)
    assert skeleton.count("(") == skeleton.count(")")
    assert bool(parsed.tsquery) == bool(parsed.rank_tsquery) == bool(parsed.highlight_queries)


def test_words_in_strips_punctuation_and_dedupes():
    assert words_in(["Hello, world! (hello) bob@example.com.", "world -- café…"]) == \
        ["Hello", "world", "hello", "bob@example.com", "café"]


# ---- tokens --------------------------------------------------------------------------

@given(st.sampled_from(["rank", "recent"]),
       st.one_of(st.none(), st.tuples(st.sampled_from(["room_id", "sender"]), st.text(max_size=20))),
       st.floats(0, 1, allow_nan=False, width=32), st.integers(0, 2**62))
def test_tokens_round_trip(order, scope, rank, so):
    hit = Hit("$e", "!r:x", "@u:x", so, rank, "text")
    assert decode_token(encode_token(order, scope, hit), order) == (scope, (rank if order == "rank" else None, so))


@pytest.mark.parametrize("token", ["", "x", "!!!!", "bnVsbA", "WzFd", "WyJyYW5rIixudWxsLG51bGwsMC41LC0xXQ",
                                   "WyJyYW5rIiwidHlwZSIsIngiLDAuNSwxXQ", "WyJyYW5rIixudWxsLG51bGwsIngiLDFd"])
def test_garbage_tokens_are_invalid_params(token):
    with pytest.raises(MatrixError) as e:
        decode_token(token, "rank")
    assert (e.value.status, e.value.errcode) == (400, "M_INVALID_PARAM")


def test_a_token_of_one_order_is_refused_by_the_other():
    token = encode_token("recent", None, Hit("$e", "!r:x", "@u:x", 5, 0.5, ""))
    with pytest.raises(MatrixError):
        decode_token(token, "rank")


# ---- text ----------------------------------------------------------------------------

def test_fold_and_clean():
    assert fold("Résumé ÉCOLE Straße ﬁle") == "resume ecole strasse file"
    assert fold("plain ASCII") == "plain ascii"
    assert clean("a\x00b\x07c\nd\te") == "a b c\nd\te"
    assert clean("lone \ud800 surrogate") == "lone ? surrogate"


def test_searchable_text_of_each_type():
    assert searchable_text("m.room.message", {"body": "hi"}) == "hi"
    assert searchable_text("m.room.message", {"body": 5}) is None
    assert searchable_text("m.room.name", {"name": "Room"}) == "Room"
    assert searchable_text("m.room.topic", {"topic": "plain", "m.topic": {"m.text": [
        {"mimetype": "text/html", "body": "<b>rich</b>"}, {"body": "plain"}]}}) == "plain"
    assert searchable_text("m.room.topic", {"topic": "", "m.topic": {"m.text": [{"body": "other"}]}}) == "\nother"
    assert searchable_text("m.room.topic", {"m.topic": "bad"}) is None
    assert searchable_text("m.room.encrypted", {"ciphertext": "x"}) is None
    assert replace_target({"m.relates_to": {"rel_type": "m.replace", "event_id": "$o"}}) == "$o"
    assert replace_target({"m.relates_to": {"rel_type": "m.thread", "event_id": "$o"}}) is None
