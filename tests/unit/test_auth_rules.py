"""Event authorisation rules for every room version (1 to 12): fixed cases per rule
family and version, plus hypothesis properties that hunt for counterexamples."""
from __future__ import annotations

import base64
import itertools
from collections.abc import Callable
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings, strategies as st

from homeserver.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth,
    check_auth_events_list,
    check_pdu_limits,
    get_named_level,
    get_required_level,
    get_user_power_level,
    room_creators,
)
from homeserver.canonical_json import encode_canonical_json
from homeserver.event import Event, StateKey
from homeserver.room_versions import ALL_ROOM_VERSIONS, V1, V2, V3, V10, V11, V12, RoomVersion

ALICE = "@alice:a.test"  # always the create event's sender
BOB = "@bob:b.test"
CAROL = "@carol:c.test"
DAVE = "@dave:a.test"
ERIN = "@erin:e.test"  # an additional creator in some v12 rooms
USERS = [ALICE, BOB, CAROL, DAVE, ERIN]

CREATE_KEY: StateKey = ("m.room.create", "")
PL_KEY: StateKey = ("m.room.power_levels", "")
ALL_VERSIONS = list(ALL_ROOM_VERSIONS)
INF = float("inf")

all_versions = pytest.mark.parametrize("rv", ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")
versions_st = st.sampled_from(ALL_VERSIONS)
PROPERTY = settings(max_examples=200, deadline=None)

_counter = itertools.count()


# --------------------------------------------------------------------------
# Test room helpers
# --------------------------------------------------------------------------

def make_event(
    rv: RoomVersion,
    event_type: str,
    sender: str,
    content: dict[str, Any],
    *,
    state_key: str | None = None,
    room_id: str | None = None,
    prev: list[str] | None = None,
    event_id: str | None = None,
) -> Event:
    event_id = event_id or f"$ev{next(_counter)}:a.test"
    pdu: dict[str, Any] = {
        "type": event_type,
        "sender": sender,
        "content": content,
        "prev_events": refs(rv, prev or []),
        "auth_events": [],
        "depth": 1,
        "origin_server_ts": 0,
    }
    if room_id is not None:
        pdu["room_id"] = room_id
    if state_key is not None:
        pdu["state_key"] = state_key
    if not rv.event_ids_are_hashes:
        pdu["event_id"] = event_id  # v1/v2 PDUs carry their id
    return Event(event_id, rv, pdu)


def refs(rv: RoomVersion, event_ids: list[str]) -> list[Any]:
    """prev_events/auth_events as the version writes them: ids, or v1/v2 [id, hashes]."""
    return list(event_ids) if rv.event_ids_are_hashes else [[e, {}] for e in event_ids]


def create_content(rv: RoomVersion, creator: str = ALICE, **extra: Any) -> dict[str, Any]:
    content: dict[str, Any] = {"room_version": rv.identifier, **extra}
    if not rv.create_sender_is_creator:
        content["creator"] = creator
    return content


def make_create(rv: RoomVersion, sender: str = ALICE, content: dict | None = None) -> Event:
    room_id = None if rv.room_id_from_create else "!room:" + sender.split(":", 1)[1]
    return make_event(
        rv, "m.room.create", sender, content if content is not None else create_content(rv, sender),
        state_key="", room_id=room_id, event_id=f"$create{next(_counter)}",
    )


class Room:
    """A tiny in-memory room: events go through check_auth and then into the state."""

    def __init__(self, rv: RoomVersion, create: Event | None = None) -> None:
        self.rv = rv
        self.create = create or make_create(rv)
        check_auth(self.create, {})
        self.room_id = self.create.room_id
        self.state: dict[StateKey, Event] = {CREATE_KEY: self.create}
        self.last = [self.create.event_id]

    def event(self, event_type: str, sender: str, content: dict, state_key: str | None = None,
              prev: list[str] | None = None) -> Event:
        return make_event(self.rv, event_type, sender, content, state_key=state_key,
                          room_id=self.room_id, prev=prev if prev is not None else self.last)

    def check(self, event_type: str, sender: str, content: dict, state_key: str | None = None,
              prev: list[str] | None = None) -> Event:
        event = self.event(event_type, sender, content, state_key, prev)
        check_auth(event, self.state)
        return event

    def allowed(self, *args: Any, **kwargs: Any) -> bool:
        try:
            self.check(*args, **kwargs)
        except AuthError:
            return False
        return True

    def apply(self, event: Event) -> Event:
        if event.is_state():
            self.state[event.key] = event
        self.last = [event.event_id]
        return event

    def send(self, *args: Any, **kwargs: Any) -> Event:
        return self.apply(self.check(*args, **kwargs))

    def force(self, event_type: str, sender: str, content: dict, state_key: str | None = None) -> Event:
        """Put an event into state without auth, to set up a situation directly."""
        return self.apply(self.event(event_type, sender, content, state_key))

    def force_member(self, user: str, membership: str | None, sender: str | None = None) -> None:
        if membership is None:
            self.state.pop(("m.room.member", user), None)
            return
        self.force("m.room.member", sender or user, {"membership": membership}, user)

    def member(self, sender: str, target: str, membership: str, **content: Any) -> Event:
        return self.event("m.room.member", sender, {"membership": membership, **content}, target)

    def try_member(self, sender: str, target: str, membership: str, **content: Any) -> bool:
        return self.allowed("m.room.member", sender, {"membership": membership, **content}, target)

    def membership(self, user: str) -> str | None:
        event = self.state.get(("m.room.member", user))
        return event.membership if event else None


def pl_content(rv: RoomVersion, users: dict[str, int] | None = None, **extra: Any) -> dict[str, Any]:
    """Typical power levels; v10/v11 list the creator at 100, v12 must not."""
    listed = {} if rv.privileged_creators else {ALICE: 100}
    content: dict[str, Any] = {
        "users": {**listed, **(users or {})},
        "users_default": 0, "events_default": 0, "state_default": 50,
        "ban": 50, "kick": 50, "redact": 50, "invite": 0,
        "events": {"m.room.name": 50, "m.room.power_levels": 100},
    }
    content.update(extra)
    return content


def standard_room(
    rv: RoomVersion,
    join_rule: str | None = "public",
    users: dict[str, int] | None = None,
    members: tuple[str, ...] = (),
    create: Event | None = None,
    **pl_extra: Any,
) -> Room:
    """create, creator join, power levels, join rules - all through check_auth - then
    `members` joined directly."""
    room = Room(rv, create)
    room.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
    room.send("m.room.power_levels", ALICE, pl_content(rv, users, **pl_extra), "")
    if join_rule is not None:
        room.send("m.room.join_rules", ALICE, {"join_rule": join_rule}, "")
    for user in members:
        room.force_member(user, "join")
    return room


def rejects(fn: Callable[[], Any], fragment: str = "") -> None:
    with pytest.raises(AuthError) as info:
        fn()
    assert fragment in str(info.value)


# --------------------------------------------------------------------------
# m.room.create
# --------------------------------------------------------------------------

@all_versions
def test_valid_create_is_allowed(rv: RoomVersion) -> None:
    check_auth(make_create(rv), {})


@all_versions
def test_create_with_prev_events_is_rejected(rv: RoomVersion) -> None:
    create = make_create(rv)
    create.pdu["prev_events"] = ["$earlier"]
    rejects(lambda: check_auth(create, {}), "prev_events")


@all_versions
def test_create_needs_empty_state_key_and_object_content(rv: RoomVersion) -> None:
    create = make_create(rv)
    create.pdu["state_key"] = "x"
    rejects(lambda: check_auth(create, {}), "state_key")
    create = make_create(rv)
    del create.pdu["state_key"]
    rejects(lambda: check_auth(create, {}), "state_key")
    create = make_create(rv)
    create.pdu["content"] = ["not", "an", "object"]
    rejects(lambda: check_auth(create, {}), "content")


@pytest.mark.parametrize("rv", [V10, V11], ids=["v10", "v11"])
def test_create_room_id_domain_must_match_sender(rv: RoomVersion) -> None:
    create = make_create(rv)
    create.pdu["room_id"] = "!room:elsewhere.test"
    rejects(lambda: check_auth(create, {}), "domain")


def test_v12_create_must_not_have_room_id() -> None:
    create = make_create(V12)
    create.pdu["room_id"] = "!room:a.test"
    rejects(lambda: check_auth(create, {}), "room_id")


@all_versions
@pytest.mark.parametrize("version", ["0", "13", "", 12, None])
def test_create_unknown_room_version_is_rejected(rv: RoomVersion, version: Any) -> None:
    create = make_create(rv, content=create_content(rv, room_version=version))
    rejects(lambda: check_auth(create, {}), "room_version")


@all_versions
def test_create_without_room_version_is_allowed(rv: RoomVersion) -> None:
    content = create_content(rv)
    del content["room_version"]
    check_auth(make_create(rv, content=content), {})


def test_v10_create_needs_creator_but_v11_v12_do_not() -> None:
    content = create_content(V10)
    del content["creator"]
    rejects(lambda: check_auth(make_create(V10, content=content), {}), "creator")
    check_auth(make_create(V11, content={"room_version": "11"}), {})
    check_auth(make_create(V12, content={"room_version": "12"}), {})


@pytest.mark.parametrize("extra", [
    "@erin:e.test", [1], ["erin"], ["@erin"], ["@erin:bad host"], [None], {"@erin:e.test": 1},
    ["@erin:e.test", "@" + "x" * 260 + ":e.test"],
])
def test_v12_invalid_additional_creators_rejected(extra: Any) -> None:
    create = make_create(V12, content={"room_version": "12", "additional_creators": extra})
    rejects(lambda: check_auth(create, {}), "additional_creators")


def test_v12_valid_additional_creators_allowed_and_ignored_before_v12() -> None:
    check_auth(make_create(V12, content={"additional_creators": [ERIN, "@x:[::1]:8448"]}), {})
    check_auth(make_create(V12, content={"additional_creators": []}), {})
    # v10/v11 do not validate the field at all
    check_auth(make_create(V11, content={"additional_creators": "junk"}), {})
    create = make_create(V11, content={"additional_creators": [ERIN]})
    assert room_creators(create) == {ALICE}


def test_room_creators_per_version() -> None:
    assert room_creators(make_create(V10, content={"creator": DAVE})) == {DAVE}
    # v11: the sender is the creator even if a stale `creator` key says otherwise
    assert room_creators(make_create(V11, content={"creator": DAVE})) == {ALICE}
    assert room_creators(make_create(V12, content={"additional_creators": [ERIN]})) == {ALICE, ERIN}


# --------------------------------------------------------------------------
# The create event in the state, room ids, m.federate
# --------------------------------------------------------------------------

@all_versions
def test_event_without_create_in_state_is_rejected(rv: RoomVersion) -> None:
    room = standard_room(rv)
    event = room.event("m.room.message", ALICE, {"body": "hi"})
    state = {k: v for k, v in room.state.items() if k != CREATE_KEY}
    rejects(lambda: check_auth(event, state), "m.room.create")


@all_versions
def test_rejected_create_event_is_not_a_basis(rv: RoomVersion) -> None:
    room = standard_room(rv)
    room.create.rejected = True
    rejects(lambda: room.check("m.room.message", ALICE, {"body": "hi"}), "rejected")


@all_versions
def test_room_id_must_match_create_event(rv: RoomVersion) -> None:
    room = standard_room(rv)
    event = room.event("m.room.message", ALICE, {"body": "hi"})
    event.pdu["room_id"] = "!other:a.test" if not rv.room_id_from_create else "!someotherhash"
    rejects(lambda: check_auth(event, room.state), "room_id")


def test_v12_room_id_is_create_event_id_with_bang() -> None:
    room = standard_room(V12)
    assert room.room_id == "!" + room.create.event_id[1:]
    room.check("m.room.message", ALICE, {"body": "hi"})


@all_versions
def test_m_federate_false_keeps_other_servers_out(rv: RoomVersion) -> None:
    create = make_create(rv, content=create_content(rv, **{"m.federate": False}))
    room = standard_room(rv, create=create)
    rejects(lambda: room.check("m.room.member", BOB, {"membership": "join"}, BOB), "federated")
    assert room.try_member(DAVE, DAVE, "join")  # same server as the creator
    room.force_member(BOB, "join")  # even if somehow joined, cannot send
    rejects(lambda: room.check("m.room.message", BOB, {"body": "x"}), "federated")


@all_versions
def test_m_federate_only_literal_false_counts(rv: RoomVersion) -> None:
    for value in (True, 0, None, "false"):
        create = make_create(rv, content=create_content(rv, **{"m.federate": value}))
        assert standard_room(rv, create=create).try_member(BOB, BOB, "join")


# --------------------------------------------------------------------------
# Joins
# --------------------------------------------------------------------------

@all_versions
def test_creator_first_join_allowed(rv: RoomVersion) -> None:
    room = Room(rv)
    room.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
    assert room.membership(ALICE) == "join"


@all_versions
def test_non_creator_cannot_take_first_join(rv: RoomVersion) -> None:
    room = Room(rv)  # no join rules yet: behaves as invite-only
    assert not room.try_member(BOB, BOB, "join")


def test_v10_first_join_uses_content_creator() -> None:
    room = Room(V10, make_create(V10, content=create_content(V10, creator=DAVE)))
    assert room.try_member(DAVE, DAVE, "join")
    assert not room.try_member(ALICE, ALICE, "join")


def test_v11_first_join_uses_create_sender_not_content() -> None:
    room = Room(V11, make_create(V11, content={"room_version": "11", "creator": DAVE}))
    assert room.try_member(ALICE, ALICE, "join")
    assert not room.try_member(DAVE, DAVE, "join")


def test_v12_additional_creator_has_no_first_join_shortcut() -> None:
    room = Room(V12, make_create(V12, content={"additional_creators": [ERIN]}))
    assert not room.try_member(ERIN, ERIN, "join")
    assert room.try_member(ALICE, ALICE, "join")


@all_versions
def test_join_with_prev_beyond_create_is_not_first_join(rv: RoomVersion) -> None:
    room = Room(rv)
    assert not room.allowed("m.room.member", ALICE, {"membership": "join"}, ALICE,
                            prev=[room.create.event_id, "$other"])


@all_versions
def test_join_for_someone_else_is_rejected(rv: RoomVersion) -> None:
    room = standard_room(rv)
    rejects(lambda: room.check("m.room.member", ALICE, {"membership": "join"}, BOB),
            "themselves")


@all_versions
@pytest.mark.parametrize("rule", ["public", "invite", "knock", "restricted", "knock_restricted"])
def test_banned_user_cannot_join(rv: RoomVersion, rule: str) -> None:
    room = standard_room(rv, rule, members=(CAROL,))
    room.send("m.room.member", ALICE, {"membership": "ban"}, BOB)
    rejects(lambda: room.check("m.room.member", BOB,
                               {"membership": "join", "join_authorised_via_users_server": ALICE}, BOB),
            "banned")


@all_versions
@pytest.mark.parametrize("rule", ["invite", "knock"])
def test_invite_and_knock_rooms_need_an_invite(rv: RoomVersion, rule: str) -> None:
    room = standard_room(rv, rule)
    if rule == "knock" and not rv.knock_join_rule:
        # Before v7 `knock` is no join rule at all: nobody joins, invited or not.
        room.send("m.room.member", ALICE, {"membership": "invite"}, BOB)
        rejects(lambda: room.check("m.room.member", BOB, {"membership": "join"}, BOB),
                "does not allow")
        return
    rejects(lambda: room.check("m.room.member", BOB, {"membership": "join"}, BOB), "not invited")
    room.send("m.room.member", ALICE, {"membership": "invite"}, BOB)
    room.send("m.room.member", BOB, {"membership": "join"}, BOB)
    # already joined: a profile update is another join
    room.send("m.room.member", BOB, {"membership": "join", "displayname": "Bob"}, BOB)


@all_versions
def test_knocked_user_is_not_invited(rv: RoomVersion) -> None:
    room = standard_room(rv, "knock")
    if not rv.knock_join_rule:
        rejects(lambda: room.check("m.room.member", BOB, {"membership": "knock"}, BOB),
                "unknown membership")
        return
    room.send("m.room.member", BOB, {"membership": "knock"}, BOB)
    assert not room.try_member(BOB, BOB, "join")


@all_versions
def test_public_room_join(rv: RoomVersion) -> None:
    room = standard_room(rv, "public")
    room.send("m.room.member", BOB, {"membership": "join"}, BOB)


@all_versions
@pytest.mark.parametrize("rule", ["private", "", "weird", None])
def test_unknown_join_rules_refuse_joins(rv: RoomVersion, rule: Any) -> None:
    room = standard_room(rv, join_rule=None)
    room.force("m.room.join_rules", ALICE, {"join_rule": rule}, "")
    assert not room.try_member(BOB, BOB, "join")


@all_versions
def test_no_join_rules_event_behaves_as_invite(rv: RoomVersion) -> None:
    room = standard_room(rv, join_rule=None)
    assert not room.try_member(BOB, BOB, "join")
    room.send("m.room.member", ALICE, {"membership": "invite"}, BOB)
    assert room.try_member(BOB, BOB, "join")


@all_versions
@pytest.mark.parametrize("rule", ["restricted", "knock_restricted"])
def test_restricted_join_rules(rv: RoomVersion, rule: str) -> None:
    room = standard_room(rv, rule, users={CAROL: 10, DAVE: 0}, members=(CAROL, DAVE), invite=5)
    via = "join_authorised_via_users_server"
    if rule not in (("restricted",) if rv.restricted_join_rule else ()) + (
            ("knock_restricted",) if rv.knock_restricted_join_rule else ()):
        # restricted arrived in v8, knock_restricted in v10: before, an unknown rule
        # that lets nobody in, not even the invited.
        assert not room.try_member(BOB, BOB, "join", **{via: CAROL})
        room.send("m.room.member", ALICE, {"membership": "invite"}, BOB)
        rejects(lambda: room.check("m.room.member", BOB, {"membership": "join"}, BOB),
                "does not allow")
        return
    rejects(lambda: room.check("m.room.member", BOB, {"membership": "join"}, BOB), "authorised")
    # authoriser joined and at/above the invite level
    assert room.try_member(BOB, BOB, "join", **{via: CAROL})
    assert room.try_member(BOB, BOB, "join", **{via: ALICE})
    # authoriser below the invite level
    rejects(lambda: room.check("m.room.member", BOB, {"membership": "join", via: DAVE}, BOB),
            "cannot invite")
    # authoriser not joined
    room.force_member(CAROL, "leave")
    rejects(lambda: room.check("m.room.member", BOB, {"membership": "join", via: CAROL}, BOB),
            "not joined")
    rejects(lambda: room.check("m.room.member", BOB, {"membership": "join", via: 42}, BOB))
    # invited users need no authoriser
    room.send("m.room.member", ALICE, {"membership": "invite"}, BOB)
    assert room.try_member(BOB, BOB, "join")


@all_versions
def test_knock_restricted_allows_knocking_but_restricted_does_not(rv: RoomVersion) -> None:
    assert standard_room(rv, "knock_restricted").try_member(BOB, BOB, "knock") is (
        rv.knock_restricted_join_rule)
    assert not standard_room(rv, "restricted").try_member(BOB, BOB, "knock")


# --------------------------------------------------------------------------
# Invites (including third-party invites)
# --------------------------------------------------------------------------

@all_versions
def test_invite_rules(rv: RoomVersion) -> None:
    room = standard_room(rv, "invite", users={CAROL: 0}, members=(CAROL,), invite=10)
    rejects(lambda: room.check("m.room.member", CAROL, {"membership": "invite"}, BOB), "invite level")
    rejects(lambda: room.check("m.room.member", DAVE, {"membership": "invite"}, BOB), "not joined")
    room.send("m.room.member", ALICE, {"membership": "invite"}, BOB)
    room.send("m.room.member", ALICE, {"membership": "invite"}, BOB)  # re-invite is fine
    rejects(lambda: room.check("m.room.member", ALICE, {"membership": "invite"}, CAROL), "already joined")
    room.send("m.room.member", ALICE, {"membership": "ban"}, DAVE)
    rejects(lambda: room.check("m.room.member", ALICE, {"membership": "invite"}, DAVE), "banned")


TPI_SIGNING_KEY = nacl.signing.SigningKey(bytes(range(32)))
OTHER_SIGNING_KEY = nacl.signing.SigningKey(bytes(range(1, 33)))


def _b64(raw: bytes, urlsafe: bool = False) -> str:
    encoded = base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)
    return encoded.decode().rstrip("=")


def signed_block(mxid: str, token: str, key: nacl.signing.SigningKey = TPI_SIGNING_KEY,
                 sender: str = ALICE) -> dict[str, Any]:
    body = {"mxid": mxid, "token": token, "sender": sender}
    signature = key.sign(encode_canonical_json(body)).signature
    return {**body, "signatures": {"id.test": {"ed25519:0": _b64(signature)}}}


def third_party_room(rv: RoomVersion, tpi_content: dict | None = None) -> Room:
    room = standard_room(rv, "invite", users={CAROL: 100}, members=(CAROL,))
    public = _b64(bytes(TPI_SIGNING_KEY.verify_key))
    content = tpi_content if tpi_content is not None else {
        "display_name": "b...@example.com", "key_validity_url": "https://id.test/v",
        "public_key": public,
    }
    room.send("m.room.third_party_invite", ALICE, content, "tok")
    return room


def tpi_member(signed: Any) -> dict[str, Any]:
    return {"membership": "invite", "third_party_invite": {"display_name": "b", "signed": signed}}


@all_versions
def test_third_party_invite_with_valid_signature(rv: RoomVersion) -> None:
    room = third_party_room(rv)
    room.send("m.room.member", ALICE, tpi_member(signed_block(BOB, "tok")), BOB)
    assert room.membership(BOB) == "invite"


@all_versions
def test_third_party_invite_via_public_keys_list_and_urlsafe_key(rv: RoomVersion) -> None:
    keys = [{"public_key": _b64(bytes(OTHER_SIGNING_KEY.verify_key))},
            {"public_key": _b64(bytes(TPI_SIGNING_KEY.verify_key), urlsafe=True)}]
    room = third_party_room(rv, {"display_name": "x", "public_key": "!!notbase64", "public_keys": keys})
    room.send("m.room.member", ALICE, tpi_member(signed_block(BOB, "tok")), BOB)


@all_versions
def test_third_party_invite_failures(rv: RoomVersion) -> None:
    room = third_party_room(rv)
    check = lambda sender, signed, target=BOB: room.check(  # noqa: E731
        "m.room.member", sender, tpi_member(signed), target)
    rejects(lambda: check(ALICE, signed_block(BOB, "tok", OTHER_SIGNING_KEY)), "signature")
    rejects(lambda: check(ALICE, {k: v for k, v in signed_block(BOB, "tok").items()
                                  if k != "signatures"}), "signature")
    tampered = signed_block(BOB, "tok")
    tampered["extra"] = "changed after signing"
    rejects(lambda: check(ALICE, tampered), "signature")
    rejects(lambda: check(ALICE, None), "signed")
    rejects(lambda: check(ALICE, {"mxid": BOB}), "mxid or token")
    rejects(lambda: check(ALICE, signed_block(CAROL, "tok")), "mxid")
    rejects(lambda: check(ALICE, signed_block(BOB, "missing")), "no m.room.third_party_invite")
    # CAROL may invite, but did not send the third-party invite
    rejects(lambda: check(CAROL, signed_block(BOB, "tok")), "did not send")
    room.send("m.room.member", ALICE, {"membership": "ban"}, BOB)
    rejects(lambda: check(ALICE, signed_block(BOB, "tok")), "banned")
    bad_container = {"membership": "invite", "third_party_invite": "nope"}
    rejects(lambda: room.check("m.room.member", ALICE, bad_container, DAVE), "signed")


@all_versions
def test_sending_third_party_invite_needs_invite_level(rv: RoomVersion) -> None:
    room = standard_room(rv, users={CAROL: 5}, members=(CAROL,), invite=10)
    rejects(lambda: room.check("m.room.third_party_invite", CAROL, {"public_key": "x"}, "t"),
            "invite level")
    room.check("m.room.third_party_invite", ALICE, {"public_key": "x"}, "t")
    # the invite level governs, not state_default (even if that is higher)
    room = standard_room(rv, users={CAROL: 5}, members=(CAROL,), invite=5, state_default=90)
    room.check("m.room.third_party_invite", CAROL, {"public_key": "x"}, "t")


# --------------------------------------------------------------------------
# Leave, kick, ban, unban, knock, unknown memberships
# --------------------------------------------------------------------------

@all_versions
@pytest.mark.parametrize("current,ok", [
    ("join", True), ("invite", True), ("knock", True), ("leave", False), ("ban", False), (None, False),
])
def test_self_leave(rv: RoomVersion, current: str | None, ok: bool) -> None:
    room = standard_room(rv, "knock")
    room.force_member(BOB, current)
    if current == "knock" and not rv.knock_join_rule:
        ok = False  # before v7 there is no knock to withdraw
    assert room.try_member(BOB, BOB, "leave") is ok


@all_versions
def test_kick_rules(rv: RoomVersion) -> None:
    room = standard_room(rv, users={BOB: 50, CAROL: 50, DAVE: 10}, members=(BOB, CAROL, DAVE))
    assert room.try_member(BOB, DAVE, "leave")  # above kick level, target lower
    rejects(lambda: room.check("m.room.member", BOB, {"membership": "leave"}, CAROL), "kick")
    rejects(lambda: room.check("m.room.member", DAVE, {"membership": "leave"}, ERIN), "kick")
    room.force_member(BOB, "leave")
    rejects(lambda: room.check("m.room.member", BOB, {"membership": "leave"}, DAVE), "not joined")
    assert room.try_member(ALICE, CAROL, "leave")


@all_versions
def test_unban_needs_ban_and_kick_levels(rv: RoomVersion) -> None:
    room = standard_room(rv, users={BOB: 60}, members=(BOB,), ban=70, kick=50)
    room.send("m.room.member", ALICE, {"membership": "ban"}, CAROL)
    rejects(lambda: room.check("m.room.member", BOB, {"membership": "leave"}, CAROL), "unbanning")
    assert room.try_member(ALICE, CAROL, "leave")
    room = standard_room(rv, users={BOB: 60}, members=(BOB,), ban=50, kick=70)
    room.send("m.room.member", ALICE, {"membership": "ban"}, CAROL)
    assert not room.try_member(BOB, CAROL, "leave")


@all_versions
def test_ban_rules(rv: RoomVersion) -> None:
    room = standard_room(rv, users={BOB: 50, CAROL: 50, DAVE: 49}, members=(BOB, CAROL, DAVE))
    assert room.try_member(BOB, DAVE, "ban")
    assert room.try_member(BOB, ERIN, "ban")  # non-members can be banned pre-emptively
    rejects(lambda: room.check("m.room.member", BOB, {"membership": "ban"}, CAROL), "ban level")
    rejects(lambda: room.check("m.room.member", DAVE, {"membership": "ban"}, ERIN), "ban level")
    rejects(lambda: room.check("m.room.member", ERIN, {"membership": "ban"}, DAVE), "not joined")
    rejects(lambda: room.check("m.room.member", BOB, {"membership": "ban"}, ALICE))


@all_versions
@pytest.mark.parametrize("current,ok", [
    (None, True), ("leave", True), ("knock", True), ("ban", False), ("invite", False), ("join", False),
])
def test_knock_rules(rv: RoomVersion, current: str | None, ok: bool) -> None:
    room = standard_room(rv, "knock")
    room.force_member(BOB, current)
    assert room.try_member(BOB, BOB, "knock") is (ok and rv.knock_join_rule)


@all_versions
def test_knock_needs_knock_rule_and_self(rv: RoomVersion) -> None:
    for rule in ("public", "invite", "restricted", "private"):
        assert not standard_room(rv, rule).try_member(BOB, BOB, "knock")
    room = standard_room(rv, "knock")
    rejects(lambda: room.check("m.room.member", ALICE, {"membership": "knock"}, BOB),
            "themselves" if rv.knock_join_rule else "unknown membership")


KNOCK_CASES = [pytest.param(rv, rule, id=f"{rule}-v{rv.identifier}") for rv in ALL_VERSIONS
               for rule in ("knock", "knock_restricted")
               if (rv.knock_join_rule if rule == "knock" else rv.knock_restricted_join_rule)]


@pytest.mark.parametrize("rv,rule", KNOCK_CASES)
def test_knock_lifecycle(rv: RoomVersion, rule: str) -> None:
    """Knock, then: accepted (invite, join), denied (kick), rescinded (leave), knocked again,
    in every version that has the join rule (versions without it refuse knocks: see above)."""
    room = standard_room(rv, rule, users={CAROL: 50, DAVE: 0}, members=(CAROL, DAVE))
    room.send("m.room.member", BOB, {"membership": "knock", "reason": "let me in"}, BOB)
    rejects(lambda: room.check("m.room.member", BOB, {"membership": "knock"}, ERIN), "themselves")
    assert not room.try_member(DAVE, BOB, "leave")  # only a moderator may deny
    room.send("m.room.member", CAROL, {"membership": "invite"}, BOB)  # accepted
    assert not room.try_member(BOB, BOB, "knock")  # invited: nothing left to ask for
    room.send("m.room.member", BOB, {"membership": "join"}, BOB)
    room.send("m.room.member", ERIN, {"membership": "knock"}, ERIN)
    room.send("m.room.member", CAROL, {"membership": "leave"}, ERIN)  # denied
    room.send("m.room.member", ERIN, {"membership": "knock"}, ERIN)  # and may knock again
    room.send("m.room.member", ERIN, {"membership": "leave"}, ERIN)  # rescinded
    assert room.membership(ERIN) == "leave"
    room.send("m.room.member", CAROL, {"membership": "ban"}, ERIN)
    assert not room.try_member(ERIN, ERIN, "knock")


@pytest.mark.parametrize("rv", [v for v in ALL_VERSIONS if v.knock_restricted_join_rule],
                         ids=lambda v: f"v{v.identifier}")
def test_knocking_user_joins_knock_restricted_room_through_an_authoriser(rv: RoomVersion) -> None:
    room = standard_room(rv, "knock_restricted", users={CAROL: 0}, members=(CAROL,))
    room.send("m.room.member", BOB, {"membership": "knock"}, BOB)
    rejects(lambda: room.check("m.room.member", BOB, {"membership": "join"}, BOB), "authorised")
    assert room.try_member(BOB, BOB, "join", join_authorised_via_users_server=CAROL)
    knock_room = standard_room(rv, "knock", members=(CAROL,))
    knock_room.send("m.room.member", BOB, {"membership": "knock"}, BOB)
    assert not knock_room.try_member(BOB, BOB, "join", join_authorised_via_users_server=CAROL)


@all_versions
@pytest.mark.parametrize("content", [{"membership": "dance"}, {"membership": 1}, {}, {"membership": None}])
def test_unknown_or_missing_membership(rv: RoomVersion, content: dict) -> None:
    room = standard_room(rv)
    with pytest.raises(AuthError):
        room.check("m.room.member", ALICE, content, ALICE)


@all_versions
def test_member_event_without_state_key(rv: RoomVersion) -> None:
    room = standard_room(rv)
    rejects(lambda: room.check("m.room.member", ALICE, {"membership": "join"}), "state_key")


# --------------------------------------------------------------------------
# Non-membership events: joined sender, required levels, user-owned state keys
# --------------------------------------------------------------------------

@all_versions
def test_sender_must_be_joined(rv: RoomVersion) -> None:
    room = standard_room(rv)
    for membership in (None, "invite", "leave", "knock", "ban"):
        room.force_member(BOB, membership)
        rejects(lambda: room.check("m.room.message", BOB, {"body": "hi"}), "not joined")
    room.force_member(BOB, "join")
    room.check("m.room.message", BOB, {"body": "hi"})


@all_versions
def test_required_levels(rv: RoomVersion) -> None:
    room = standard_room(rv, users={BOB: 20}, members=(BOB,), events_default=10, state_default=30,
                         events={"m.room.name": 20, "m.big": 21, "m.room.topic": 0})
    room.check("m.room.message", BOB, {})            # events_default 10
    room.check("m.room.name", BOB, {}, "")           # events entry 20
    room.check("m.room.topic", BOB, {}, "")          # events entry 0 below state_default
    rejects(lambda: room.check("m.big", BOB, {}), "too low")
    rejects(lambda: room.check("m.room.avatar", BOB, {}, ""), "too low")  # state_default 30


@all_versions
def test_defaults_without_power_levels(rv: RoomVersion) -> None:
    room = Room(rv)
    room.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
    expected_creator = INF if rv.privileged_creators else 100
    assert get_user_power_level(ALICE, room.state) == expected_creator
    assert get_user_power_level(BOB, room.state) == 0
    assert get_required_level("m.room.name", True, room.state) == 50
    assert get_required_level("m.room.message", False, room.state) == 0
    assert [get_named_level(n, room.state) for n in ("invite", "kick", "ban", "redact")] == [0, 50, 50, 50]
    with pytest.raises(ValueError):
        get_named_level("sing", room.state)
    room.send("m.room.join_rules", ALICE, {"join_rule": "public"}, "")
    room.send("m.room.member", BOB, {"membership": "join"}, BOB)
    rejects(lambda: room.check("m.room.name", BOB, {"name": "x"}, ""), "too low")
    room.check("m.room.message", BOB, {"body": "x"})


@all_versions
def test_power_levels_read_users_default(rv: RoomVersion) -> None:
    room = standard_room(rv, users={BOB: 7}, users_default=3)
    assert get_user_power_level(BOB, room.state) == 7
    assert get_user_power_level(CAROL, room.state) == 3
    expected = INF if rv.privileged_creators else 100
    assert get_user_power_level(ALICE, room.state) == expected


def test_v10_v11_creator_is_ordinary_once_power_levels_exist() -> None:
    for rv in (V10, V11):
        room = Room(rv)
        room.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
        room.send("m.room.power_levels", ALICE, {"users": {BOB: 100}}, "")
        assert get_user_power_level(ALICE, room.state) == 0


@all_versions
def test_state_key_naming_another_user(rv: RoomVersion) -> None:
    room = standard_room(rv, users={BOB: 50}, members=(BOB,))
    room.check("m.custom.state", BOB, {}, BOB)
    rejects(lambda: room.check("m.custom.state", BOB, {}, CAROL), "another user")
    room.check("m.custom.state", BOB, {}, "not-a-user")


@all_versions
def test_redaction_uses_event_level_not_redact_level(rv: RoomVersion) -> None:
    if rv.redaction_auth_rule:
        return  # v1/v2: see test_v1_v2_redaction_auth_rule
    room = standard_room(rv, users={BOB: 0}, members=(BOB,), redact=50)
    redaction = {"redacts": "$target"}
    room.check("m.room.redaction", BOB, redaction)  # redact level is not an auth rule
    room = standard_room(rv, users={BOB: 0}, members=(BOB,), events={"m.room.redaction": 10})
    rejects(lambda: room.check("m.room.redaction", BOB, redaction), "too low")


@all_versions
def test_aliases_rule_before_v6(rv: RoomVersion) -> None:
    """v1-v5: a server may set m.room.aliases under its own name, even for a sender who
    is not in the room; v6 removed the rule, so it is then a plain state event."""
    room = standard_room(rv, users={BOB: 0}, members=(BOB,))
    own_domain = room.event("m.room.aliases", ERIN, {"aliases": []}, "e.test")
    other_domain = room.event("m.room.aliases", ALICE, {"aliases": []}, "e.test")
    low_power = room.event("m.room.aliases", BOB, {"aliases": []}, "b.test")
    if rv.special_case_aliases:
        check_auth(own_domain, room.state)  # Erin is not even joined
        check_auth(low_power, room.state)   # and no power level is needed
        rejects(lambda: check_auth(other_domain, room.state), "sender's server")
        rejects(lambda: check_auth(room.event("m.room.aliases", ALICE, {}, ""), room.state),
                "state_key")
    else:
        rejects(lambda: check_auth(own_domain, room.state), "not joined")
        rejects(lambda: check_auth(low_power, room.state), "too low")
        check_auth(other_domain, room.state)  # the creator may set any state key


@pytest.mark.parametrize("rv", [V1, V2], ids=lambda v: f"v{v.identifier}")
def test_v1_v2_redaction_auth_rule(rv: RoomVersion) -> None:
    """v1/v2: a redaction needs the redact level, unless the redacted event's id names
    the same server as the redaction's id. `redacts` is a top-level key there."""
    room = standard_room(rv, users={BOB: 0}, members=(BOB,), redact=50)

    def redaction(sender: str, target: str, event_id: str) -> Event:
        event = make_event(rv, "m.room.redaction", sender, {}, room_id=room.room_id,
                           prev=room.last, event_id=event_id)
        event.pdu["redacts"] = target
        return event

    check_auth(redaction(BOB, "$x:a.test", "$r1:a.test"), room.state)   # same server
    rejects(lambda: check_auth(redaction(BOB, "$x:b.test", "$r2:a.test"), room.state),
            "redact level")
    rejects(lambda: check_auth(redaction(BOB, "$hash", "$r3:a.test"), room.state), "redact level")
    check_auth(redaction(ALICE, "$x:b.test", "$r4:a.test"), room.state)  # redact level
    # The ordinary required level still applies first.
    room = standard_room(rv, users={BOB: 0}, members=(BOB,), events={"m.room.redaction": 10})
    rejects(lambda: check_auth(redaction(BOB, "$x:a.test", "$r5:a.test"), room.state), "too low")


# --------------------------------------------------------------------------
# m.room.power_levels
# --------------------------------------------------------------------------

INT_VERSIONS = [v for v in ALL_VERSIONS if v.enforce_int_power_levels]


@pytest.mark.parametrize("rv", INT_VERSIONS, ids=lambda v: f"v{v.identifier}")
@pytest.mark.parametrize("bad", [
    {"ban": "50"}, {"kick": 5.0}, {"invite": True}, {"users_default": None},
    {"events": {"m.x": "1"}}, {"events": []}, {"notifications": {"room": 1.5}},
    {"users": {"not-a-user": 1}}, {"users": {BOB: "10"}}, {"users": []}, {"users": {BOB: False}},
    {"state_default": 2**53},
])
def test_power_levels_must_be_integers(rv: RoomVersion, bad: dict) -> None:
    room = standard_room(rv)
    rejects(lambda: room.check("m.room.power_levels", ALICE, {**pl_content(rv), **bad}, ""))


@pytest.mark.parametrize("rv", [v for v in ALL_VERSIONS if not v.enforce_int_power_levels],
                         ids=lambda v: f"v{v.identifier}")
def test_power_levels_before_v10_accept_integer_strings(rv: RoomVersion) -> None:
    """v1-v9 read integer strings ("+050", " 7 ") as levels; v1-v5 also floats, truncated.
    Only `users` is validated; other bad values fall back to the defaults."""
    room = standard_room(rv, members=(BOB,))
    stringy = {**pl_content(rv), "users": {ALICE: "100", BOB: " +050 "}, "kick": "0040",
               "ban": "junk", "events": {"m.x": "-1"}}
    room.send("m.room.power_levels", ALICE, stringy, "")
    assert get_user_power_level(BOB, room.state) == 50
    assert get_named_level("kick", room.state) == 40
    assert get_named_level("ban", room.state) == 50  # unreadable: the default
    assert get_required_level("m.x", False, room.state) == -1
    floaty = {**pl_content(rv), "users": {ALICE: 100, BOB: 50.9}}
    if rv.float_power_levels:
        room.send("m.room.power_levels", ALICE, floaty, "")
        assert get_user_power_level(BOB, room.state) == 50
    else:
        rejects(lambda: room.check("m.room.power_levels", ALICE, floaty, ""), "users")
    for bad_users in ({BOB: "ten"}, {BOB: "1.5"}, {BOB: True}, {"not-a-user": 1}, []):
        rejects(lambda: room.check("m.room.power_levels", ALICE,
                                   {**pl_content(rv), "users": bad_users}, ""), "users")
    # An unchanged value written another way is no change: Bob (50) may keep kick at 40.
    room.force("m.room.power_levels", ALICE, {**pl_content(rv), "users": {ALICE: 100, BOB: 50},
                                              "kick": "40", "events": {}}, "")
    assert room.allowed("m.room.power_levels", BOB,
                        {**pl_content(rv), "users": {ALICE: 100, BOB: 50}, "kick": 40,
                         "events": {}}, "")


@all_versions
def test_first_power_levels_are_allowed_without_comparison(rv: RoomVersion) -> None:
    room = Room(rv)
    room.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
    room.send("m.room.power_levels", ALICE, {"users": {BOB: 10**6}, "ban": 10**6}, "")


@all_versions
def test_power_level_changes(rv: RoomVersion) -> None:
    room = standard_room(rv, users={BOB: 50, CAROL: 50, DAVE: 20}, members=(BOB,),
                         events={"m.room.power_levels": 50, "m.high": 60},
                         notifications={"room": 60})
    base = room.state[PL_KEY].content

    def change(**kw: Any) -> dict[str, Any]:
        return {**base, **kw}

    users = base["users"]
    assert room.allowed("m.room.power_levels", BOB, change(users={**users, DAVE: 50}), "")
    assert room.allowed("m.room.power_levels", BOB, change(users={**users, BOB: 10}), "")  # self-demotion
    assert room.allowed("m.room.power_levels", BOB, change(kick=40), "")
    rules = [
        (change(users={**users, DAVE: 51}), "raise"),                          # above own level
        (change(users={**users, CAROL: 40}), "not below"),                      # peer
        (change(users={k: v for k, v in users.items() if k != CAROL}), "not below"),  # remove peer
        (change(ban=51), "above"),                                             # new named level too high
        (change(events={"m.room.power_levels": 50}), "m.high"),               # remove entry above own
        (change(events={**base["events"], "m.new": 70}), "m.new"),            # add entry above own
        (change(users={**users, BOB: 51}), "raise"),                           # raise self
    ]
    if rv.limit_notifications_power_levels:  # v6+ guard `notifications` like `events`
        rules.append((change(notifications={"room": 10}), "notifications"))
    else:
        assert room.allowed("m.room.power_levels", BOB, change(notifications={"room": 10}), "")
    for content, fragment in rules:
        rejects(lambda: room.check("m.room.power_levels", BOB, content, ""), fragment)
    room = standard_room(rv, users={BOB: 50}, members=(BOB,), ban=60,
                         events={"m.room.power_levels": 50})
    rejects(lambda: room.check("m.room.power_levels", BOB,
                               {**room.state[PL_KEY].content, "ban": 40}, ""), "current value")


@all_versions
def test_removing_named_level_counts_as_change(rv: RoomVersion) -> None:
    room = standard_room(rv, users={BOB: 50}, members=(BOB,), ban=60, events={"m.room.power_levels": 50})
    content = dict(room.state[PL_KEY].content)
    del content["ban"]
    rejects(lambda: room.check("m.room.power_levels", BOB, content, ""), "ban")


def test_v12_power_levels_must_not_list_creators() -> None:
    create = make_create(V12, content={"additional_creators": [ERIN]})
    room = standard_room(V12, create=create, members=(ERIN,))
    for creator in (ALICE, ERIN):
        rejects(lambda: room.check("m.room.power_levels", ALICE,
                                   pl_content(V12, users={creator: 100}), ""), "creators")
    room.check("m.room.power_levels", ERIN, pl_content(V12, users={BOB: 2**53 - 1}), "")
    # also on the very first power levels event
    fresh = Room(V12, make_create(V12, content={"additional_creators": [ERIN]}))
    fresh.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
    rejects(lambda: fresh.check("m.room.power_levels", ALICE, {"users": {ERIN: 100}}, ""), "creators")


def test_v12_creators_are_infinite_and_cannot_be_removed() -> None:
    create = make_create(V12, content={"additional_creators": [ERIN]})
    room = standard_room(V12, create=create, users={BOB: 100}, members=(BOB, ERIN))
    assert get_user_power_level(ALICE, room.state) == INF
    assert get_user_power_level(ERIN, room.state) == INF
    for sender in (BOB, ERIN):
        assert not room.try_member(sender, ALICE, "ban")
        assert not room.try_member(sender, ALICE, "leave")
    assert room.try_member(ALICE, BOB, "ban")  # a creator outranks any listed user


def test_v10_v11_creator_listed_in_power_levels_is_fine() -> None:
    for rv in (V10, V11):
        room = standard_room(rv)
        assert get_user_power_level(ALICE, room.state) == 100


# --------------------------------------------------------------------------
# Auth events selection and the auth_events list rules
# --------------------------------------------------------------------------

@all_versions
def test_auth_types_for_message_and_create(rv: RoomVersion) -> None:
    expected = [PL_KEY, ("m.room.member", BOB)]
    if not rv.room_id_from_create:
        expected.insert(0, CREATE_KEY)
    assert auth_types_for_event("m.room.message", BOB, None, {}, rv) == expected
    assert auth_types_for_event("m.room.create", BOB, "", {}, rv) == []


@all_versions
def test_auth_types_for_memberships(rv: RoomVersion) -> None:
    def types(sender: str, target: str, content: dict) -> set[StateKey]:
        return set(auth_types_for_event("m.room.member", sender, target, content, rv))

    base = {PL_KEY} | (set() if rv.room_id_from_create else {CREATE_KEY})
    jr = ("m.room.join_rules", "")
    assert types(BOB, BOB, {"membership": "join"}) == base | {("m.room.member", BOB), jr}
    # The authoriser is selected only where restricted rooms exist (v8+).
    authoriser = {("m.room.member", CAROL)} if rv.restricted_join_rule else set()
    assert types(BOB, BOB, {"membership": "join", "join_authorised_via_users_server": CAROL}) == (
        base | {("m.room.member", BOB), jr} | authoriser)
    assert types(BOB, BOB, {"membership": "knock"}) == base | {("m.room.member", BOB), jr}
    assert types(ALICE, BOB, {"membership": "leave"}) == base | {
        ("m.room.member", ALICE), ("m.room.member", BOB)}
    assert types(ALICE, BOB, {"membership": "ban"}) == base | {
        ("m.room.member", ALICE), ("m.room.member", BOB)}
    assert types(ALICE, BOB, tpi_member(signed_block(BOB, "tok"))) == base | {
        ("m.room.member", ALICE), ("m.room.member", BOB), jr, ("m.room.third_party_invite", "tok")}
    # the authoriser only matters for joins
    assert ("m.room.member", CAROL) not in types(
        ALICE, BOB, {"membership": "invite", "join_authorised_via_users_server": CAROL})


def _auth_events_for(room: Room, event: Event) -> list[Event]:
    keys = auth_types_for_event(event.type, event.sender, event.state_key, event.content, room.rv)
    return [room.state[k] for k in keys if k in room.state]


@all_versions
def test_auth_events_list_rules(rv: RoomVersion) -> None:
    room = standard_room(rv, members=(BOB,))
    event = room.event("m.room.message", BOB, {"body": "hi"})
    good = _auth_events_for(room, event)
    check_auth_events_list(event, good)
    rejects(lambda: check_auth_events_list(event, good + [good[-1]]), "duplicate")
    rejects(lambda: check_auth_events_list(event, good + [room.state[("m.room.join_rules", "")]]),
            "not selected")
    rejects(lambda: check_auth_events_list(event, good + [room.state[("m.room.member", ALICE)]]),
            "not selected")
    message = room.event("m.room.message", BOB, {})
    rejects(lambda: check_auth_events_list(event, good + [message]), "not a state event")
    foreign_room = "!elsewhere" if rv.room_id_from_create else "!elsewhere:a.test"
    foreign_pl = make_event(rv, "m.room.power_levels", ALICE, {}, state_key="", room_id=foreign_room)
    rest = [e for e in good if e.type != "m.room.power_levels"]
    rejects(lambda: check_auth_events_list(event, rest + [foreign_pl]), "different room")
    # the create event of the room itself
    if rv.room_id_from_create:
        rejects(lambda: check_auth_events_list(event, good + [room.create]), "not selected")
    else:
        rejects(lambda: check_auth_events_list(event, [e for e in good if e.type != "m.room.create"]),
                "m.room.create")
        other_create = make_create(rv)
        other_create.pdu["room_id"] = "!elsewhere:a.test"
        rejects(lambda: check_auth_events_list(
            event, [e for e in good if e.type != "m.room.create"] + [other_create]), "different room")
    check_auth_events_list(room.create, [])


# --------------------------------------------------------------------------
# PDU limits
# --------------------------------------------------------------------------

def _pdu(rv: RoomVersion, **overrides: Any) -> dict[str, Any]:
    room_id = "!" + "A" * 43 if rv.room_id_from_create else "!room:a.test"
    pdu = {"type": "m.room.message", "sender": ALICE, "room_id": room_id, "content": {"body": "x"},
           "prev_events": [], "auth_events": [], "depth": 2, "origin_server_ts": 1}
    if not rv.event_ids_are_hashes:
        pdu["event_id"] = "$abc:a.test"
    pdu.update(overrides)
    return pdu


@all_versions
def test_pdu_limits(rv: RoomVersion) -> None:
    check_pdu_limits(_pdu(rv), rv)
    check_pdu_limits(_pdu(rv, sender="@Legacy User:a.test"), rv)  # historical localparts pass
    long = "x" * 256
    for field, value in [("type", long), ("state_key", long), ("sender", "@" + long + ":a.test"),
                         ("event_id", "$" + long), ("room_id", "!" + long + ":a.test")]:
        rejects(lambda: check_pdu_limits(_pdu(rv, **{field: value}), rv), "")
    check_pdu_limits(_pdu(rv, state_key="é" * 127), rv)  # 254 bytes
    rejects(lambda: check_pdu_limits(_pdu(rv, state_key="é" * 128), rv), "255")  # 256 bytes
    for sender in ("alice:a.test", "@alice", "@alice:bad host", "@ali:ce:", 5):
        rejects(lambda: check_pdu_limits(_pdu(rv, sender=sender), rv), "sender")
    rejects(lambda: check_pdu_limits(_pdu(rv, content={"n": 1.5}), rv), "canonical")
    rejects(lambda: check_pdu_limits(_pdu(rv, type=None), rv), "type")
    rejects(lambda: check_pdu_limits(["not", "a", "dict"], rv), "object")  # type: ignore[arg-type]


@all_versions
def test_pdu_total_size(rv: RoomVersion) -> None:
    pdu = _pdu(rv, content={"body": ""})
    overhead = len(encode_canonical_json(pdu))
    pdu["content"]["body"] = "x" * (65536 - overhead)
    check_pdu_limits(pdu, rv)
    pdu["content"]["body"] += "x"
    rejects(lambda: check_pdu_limits(pdu, rv), "65536")


def test_pdu_room_id_grammar_per_version() -> None:
    rejects(lambda: check_pdu_limits(_pdu(V12, room_id="!room:a.test"), V12), "room_id")
    rejects(lambda: check_pdu_limits(_pdu(V10, room_id="!" + "A" * 43), V10), "room_id")
    rejects(lambda: check_pdu_limits(_pdu(V11, room_id="room:a.test"), V11), "room_id")
    v12_create = _pdu(V12, type="m.room.create", state_key="")
    del v12_create["room_id"]
    check_pdu_limits(v12_create, V12)
    rejects(lambda: check_pdu_limits({k: v for k, v in _pdu(V10).items() if k != "room_id"}, V10),
            "room_id")


@pytest.mark.parametrize("rv", [V1, V2], ids=lambda v: f"v{v.identifier}")
def test_v1_v2_pdus_carry_a_server_scoped_event_id(rv: RoomVersion) -> None:
    check_pdu_limits(_pdu(rv, event_id="$Abc123:a.test:8448"), rv)
    for bad in (None, 5, "abc:a.test", "$abc", "$:a.test", "$abc:bad host", "$a\x00b:a.test"):
        pdu = _pdu(rv, event_id=bad)
        if bad is None:
            del pdu["event_id"]
        rejects(lambda: check_pdu_limits(pdu, rv), "event_id")
    check_pdu_limits({k: v for k, v in _pdu(V3).items() if k != "event_id"}, V3)  # v3+: none


# --------------------------------------------------------------------------
# Hypothesis properties
# --------------------------------------------------------------------------

levels = st.integers(-5, 110)
JOIN_RULES = ["public", "invite", "knock", "restricted", "knock_restricted", "private", "weird"]
MEMBERSHIPS = [None, "join", "invite", "leave", "ban", "knock"]
plain_types = st.sampled_from(
    ["m.room.message", "m.room.name", "m.room.topic", "org.example.thing", "m.room.redaction",
     "m.room.join_rules", "m.room.avatar"])


@PROPERTY
@given(rv=versions_st, level=st.integers(-50, 100), gap=st.integers(1, 100), event_type=plain_types,
       is_state=st.booleans(), via_events=st.booleans())
def test_below_required_level_never_sends(rv: RoomVersion, level: int, gap: int, event_type: str,
                                          is_state: bool, via_events: bool) -> None:
    required = level + gap
    if via_events:
        extra: dict[str, Any] = {"events": {event_type: required}}
    else:
        extra = {"state_default" if is_state else "events_default": required, "events": {}}
    if event_type == "m.room.redaction" and rv.redaction_auth_rule:
        extra["redact"] = -100  # v1/v2's redaction rule is tested on its own
    room = standard_room(rv, members=(BOB,))
    # forced: with such levels even the creator could not have set up the room
    room.force("m.room.power_levels", ALICE, pl_content(rv, {BOB: level}, **extra), "")
    with pytest.raises(AuthError):
        room.check(event_type, BOB, {"body": "x"}, "" if is_state else None)
    # ...and at or above the required level the same event goes through
    room.state[PL_KEY].content["users"][BOB] = required + gap // 2
    room.check(event_type, BOB, {"body": "x"}, "" if is_state else None)


@PROPERTY
@given(rv=versions_st, join_rule=st.sampled_from(JOIN_RULES),
       authoriser=st.sampled_from([None, ALICE, CAROL, BOB, 7]),
       prev_is_create=st.booleans(), displayname=st.none() | st.text(max_size=5))
def test_banned_user_never_joins(rv: RoomVersion, join_rule: str, authoriser: Any,
                                 prev_is_create: bool, displayname: str | None) -> None:
    room = standard_room(rv, join_rule, members=(CAROL,))
    room.send("m.room.member", ALICE, {"membership": "ban"}, BOB)
    content: dict[str, Any] = {"membership": "join"}
    if authoriser is not None:
        content["join_authorised_via_users_server"] = authoriser
    if displayname is not None:
        content["displayname"] = displayname
    prev = [room.create.event_id] if prev_is_create else None
    with pytest.raises(AuthError):
        room.check("m.room.member", BOB, content, BOB, prev=prev)


@PROPERTY
@given(rv=versions_st, sender=st.sampled_from(USERS), target=st.sampled_from(USERS),
       join_rule=st.sampled_from(JOIN_RULES), target_was=st.sampled_from(MEMBERSHIPS),
       sender_was=st.sampled_from(MEMBERSHIPS), authoriser=st.sampled_from([None, ALICE, CAROL]))
def test_only_the_target_can_join(rv: RoomVersion, sender: str, target: str, join_rule: str,
                                  target_was: str | None, sender_was: str | None,
                                  authoriser: str | None) -> None:
    if sender == target:
        return
    room = standard_room(rv, join_rule, users={CAROL: 100}, members=(CAROL,))
    room.force_member(target, target_was)
    room.force_member(sender, sender_was)
    content: dict[str, Any] = {"membership": "join"}
    if authoriser:
        content["join_authorised_via_users_server"] = authoriser
    with pytest.raises(AuthError):
        room.check("m.room.member", sender, content, target)


PL_OTHERS = [CAROL, DAVE, "@frank:f.test"]
named_levels = st.dictionaries(
    st.sampled_from(["users_default", "events_default", "ban", "redact", "kick", "invite"]),
    levels, max_size=4)
event_levels = st.dictionaries(st.sampled_from(["m.room.name", "m.room.topic", "m.x"]), levels,
                               max_size=3)
notification_levels = st.dictionaries(st.just("room"), levels, max_size=1)
user_levels = st.dictionaries(st.sampled_from(PL_OTHERS), levels, max_size=3)


def _changed(old: dict, new: dict) -> list[str]:
    return [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]


@PROPERTY
@given(rv=versions_st, own=st.integers(0, 100), old_named=named_levels, new_named=named_levels,
       old_events=event_levels, new_events=event_levels, old_notes=notification_levels,
       new_notes=notification_levels, old_users=user_levels, new_users=user_levels,
       new_own=st.none() | levels, keep_creator=st.booleans())
def test_power_level_changes_respect_sender_level(
    rv: RoomVersion, own: int, old_named: dict, new_named: dict, old_events: dict,
    new_events: dict, old_notes: dict, new_notes: dict, old_users: dict, new_users: dict,
    new_own: int | None, keep_creator: bool,
) -> None:
    """Search for a power-levels change by a non-creator that raises anything above
    the sender's level, or touches anything at/above it - none may be allowed. And
    every change that stays within those bounds must be allowed."""
    creator_entry = {} if rv.privileged_creators else {ALICE: 100}
    old = {**old_named, "state_default": 0, "events": old_events, "notifications": old_notes,
           "users": {**creator_entry, **old_users, BOB: own}}
    new_user_map = {**(creator_entry if keep_creator else {}), **new_users}
    if new_own is not None:
        new_user_map[BOB] = new_own
    new = {**new_named, "state_default": 0, "events": new_events, "notifications": new_notes,
           "users": new_user_map}
    room = standard_room(rv, members=(BOB,))
    room.force("m.room.power_levels", ALICE, old, "")

    allowed = room.allowed("m.room.power_levels", BOB, new, "")

    violations = []
    for key in _changed(old, new):
        if key in ("events", "notifications", "users"):
            continue
        old_v, new_v = old.get(key), new.get(key)
        if (old_v is not None and old_v > own) or (new_v is not None and new_v > own):
            violations.append(key)
    # `notifications` is guarded like `events` only from v6 on.
    for name in ("events", "notifications") if rv.limit_notifications_power_levels else ("events",):
        for key in _changed(old[name], new[name]):
            old_v, new_v = old[name].get(key), new[name].get(key)
            if (old_v is not None and old_v > own) or (new_v is not None and new_v > own):
                violations.append(f"{name}.{key}")
    for user in _changed(old["users"], new["users"]):
        old_v, new_v = old["users"].get(user), new["users"].get(user)
        if new_v is not None and new_v > own:
            violations.append(f"raised {user}")
        if user != BOB and old_v is not None and old_v >= own:
            violations.append(f"changed {user}")
    assert allowed == (not violations), violations


@PROPERTY
@given(sender=st.sampled_from([ALICE, ERIN, BOB]),
       users=st.dictionaries(st.sampled_from([ALICE, ERIN, BOB, CAROL]), st.integers(-10, 2**53 - 1),
                             max_size=4),
       bob_level=st.integers(0, 100))
def test_v12_creators_can_never_be_demoted(sender: str, users: dict, bob_level: int) -> None:
    create = make_create(V12, content={"additional_creators": [ERIN]})
    room = standard_room(V12, create=create, users={BOB: bob_level}, members=(BOB, ERIN))
    lists_creator = ALICE in users or ERIN in users
    allowed = room.allowed("m.room.power_levels", sender, {"users": users}, "")
    if lists_creator:
        assert not allowed
    if allowed:
        room.send("m.room.power_levels", sender, {"users": users}, "")
    for creator in (ALICE, ERIN):
        assert get_user_power_level(creator, room.state) == INF
        assert not room.try_member(sender, creator, "ban")
        assert not room.try_member(sender, creator, "leave") or sender == creator
    if sender in (ALICE, ERIN) and not lists_creator:
        assert allowed  # creators may set any (integer) levels for others


_operations = st.lists(
    st.tuples(st.sampled_from(USERS), st.sampled_from(USERS),
              st.sampled_from(["join", "invite", "leave", "ban", "knock", "message"])),
    min_size=1, max_size=12)


@PROPERTY
@given(rv=versions_st, join_rule=st.sampled_from(JOIN_RULES), ops=_operations)
def test_random_walk_is_deterministic_and_keeps_ban_invariants(
    rv: RoomVersion, join_rule: str, ops: list[tuple[str, str, str]],
) -> None:
    """Drive a room with random membership operations. Each verdict must be the same
    against a copy of the state in another order, and against only the selected auth
    events; a banned user must never become joined without an unban first."""
    room = standard_room(rv, join_rule, users={BOB: 50, CAROL: 10})
    for sender, target, op in ops:
        if op == "message":
            event = room.event("m.room.message", sender, {"body": "x"})
        else:
            event = room.member(sender, target, op)
        verdicts = []
        reversed_state = dict(reversed(list(room.state.items())))
        auth_keys = auth_types_for_event(event.type, event.sender, event.state_key, event.content, rv)
        auth_state = {k: room.state[k] for k in [*auth_keys, CREATE_KEY] if k in room.state}
        for state in (room.state, reversed_state, auth_state, room.state):
            try:
                check_auth(event, state)
                verdicts.append(None)
            except AuthError as e:
                verdicts.append(str(e))
        assert len(set(verdicts)) == 1, verdicts
        if verdicts[0] is not None:
            continue
        before = room.membership(target)
        if op == "join":
            assert before != "ban"
        if op in ("ban", "leave") and sender != target:
            assert get_user_power_level(sender, room.state) > get_user_power_level(target, room.state)
        room.apply(event)


@PROPERTY
@given(rv=versions_st, sender=st.sampled_from(USERS), target=st.sampled_from(USERS),
       membership=st.sampled_from(["join", "invite", "leave", "ban", "knock"]),
       authoriser=st.sampled_from([None, CAROL, DAVE]), extra=st.sampled_from(JOIN_RULES))
def test_selected_auth_events_always_pass_the_list_rules(
    rv: RoomVersion, sender: str, target: str, membership: str, authoriser: str | None, extra: str,
) -> None:
    room = standard_room(rv, extra, members=(CAROL, DAVE, target))
    content: dict[str, Any] = {"membership": membership}
    if authoriser:
        content["join_authorised_via_users_server"] = authoriser
    event = room.member(sender, target, **content)
    auth_events = _auth_events_for(room, event)
    check_auth_events_list(event, auth_events)
    with pytest.raises(AuthError):
        check_auth_events_list(event, auth_events + auth_events[:1])
    assert (CREATE_KEY in {e.key for e in auth_events}) is (not rv.room_id_from_create)


@PROPERTY
@given(rv=versions_st, size=st.integers(0, 70000))
def test_pdu_size_limit_is_exact(rv: RoomVersion, size: int) -> None:
    pdu = _pdu(rv, content={"body": ""})
    overhead = len(encode_canonical_json(pdu))
    pdu["content"]["body"] = "x" * max(0, size - overhead)
    total = len(encode_canonical_json(pdu))
    if total > 65536:
        with pytest.raises(AuthError):
            check_pdu_limits(pdu, rv)
    else:
        check_pdu_limits(pdu, rv)
