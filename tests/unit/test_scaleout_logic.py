"""Scale-out's pure parts: which writer owns a room, and the multi-writer stream
positions (a reader never shows a position while an id at or below it may still commit,
and idle writers never hold the others back)."""
from hypothesis import given, settings, strategies as st

from homeserver.sharding import writer_for_room
from homeserver.stream_positions import StreamView, WriterClaim, should_reannounce

room_ids = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40).map(
    lambda s: f"!{s}:example.org")
writer_names = st.lists(st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True), min_size=1, max_size=8,
                        unique=True)


@settings(max_examples=300, deadline=None)
@given(room_ids, writer_names, st.randoms(use_true_random=False))
def test_owner_is_a_writer_and_ignores_list_order(room_id, writers, rnd):
    owner = writer_for_room(room_id, writers)
    assert owner in writers
    shuffled = list(writers)
    rnd.shuffle(shuffled)
    assert writer_for_room(room_id, shuffled) == owner


@settings(max_examples=200, deadline=None)
@given(st.lists(room_ids, min_size=1, max_size=60, unique=True), writer_names,
       st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True))
def test_adding_a_writer_moves_rooms_only_to_it(rooms, writers, extra):
    if extra in writers:
        return
    for room in rooms:
        after = writer_for_room(room, writers + [extra])
        assert after in (writer_for_room(room, writers), extra)


def test_rooms_spread_over_writers():
    writers = ["w1", "w2", "w3", "w4"]
    counts = {w: 0 for w in writers}
    for i in range(4000):
        counts[writer_for_room(f"!room{i}:example.org", writers)] += 1
    assert all(800 < c < 1200 for c in counts.values()), counts


# ---- the multi-writer protocol, simulated ------------------------------------------

actions = st.lists(st.tuples(st.sampled_from(["start", "commit", "fail", "hear", "read", "die"]),
                             st.integers(0, 2), st.integers(1, 4)), max_size=150)


class _World:
    """Writers allocating from one sequence and announcing through one ordered channel
    (NOTIFY is delivered in commit order); one reader."""

    def __init__(self, n: int) -> None:
        self.seq = 0
        self.names = [f"w{i}" for i in range(n)]
        self.claims = {w: WriterClaim(0) for w in self.names}
        self.batch: dict[str, list[int]] = {}
        self.committed: set[int] = set()
        self.gone: set[int] = set()  # failed or aborted: will never commit
        self.bus: list[tuple[str, int]] = []
        self.heard_upto = {w: 0 for w in self.names}
        self.views = {w: StreamView(self.names) for w in self.names}  # what each writer has heard
        self.read_upto = 0
        self.view = StreamView(self.names)
        self.dead: set[str] = set()
        for w in self.names:  # a writer announces its claim before its first allocation
            self.bus.append((w, 0))

    def step(self, kind: str, i: int, k: int) -> None:
        w = self.names[i % len(self.names)]
        if w in self.dead:
            if kind == "start":  # restarted: claims the highest position it can see
                self.dead.discard(w)
                self.claims[w] = WriterClaim(max(p for _, p in self.bus))
                self.heard_upto[w] = 0
                self.views[w] = StreamView(self.names)
                self.bus.append((w, self.claims[w].position))
            return
        claim = self.claims[w]
        if kind == "start" and w not in self.batch:
            claim.begin()
            self.batch[w] = [self.seq + j + 1 for j in range(k)]
            self.seq += k
        elif kind in ("commit", "fail") and w in self.batch:
            ids = self.batch.pop(w)
            (self.committed if kind == "commit" else self.gone).update(ids)
            self.bus.append((w, claim.finish(max(ids))))
        elif kind == "hear" and self.heard_upto[w] < len(self.bus):
            src, pos = self.bus[self.heard_upto[w]]
            self.heard_upto[w] += 1
            self.views[w].announce(src, pos)
            claim.hear(pos)
            if should_reannounce(w, claim, self.views[w]):
                self.bus.append((w, claim.position))
        elif kind == "read" and self.read_upto < len(self.bus):
            self.view.announce(*self.bus[self.read_upto])
            self.read_upto += 1
        elif kind == "die":
            self.dead.add(w)
            self.gone.update(self.batch.pop(w, []))  # PostgreSQL aborts its open transaction
            self.view.mark_dead(w)

    def check_safe(self) -> None:
        for i in range(1, self.view.visible + 1):
            assert i in self.committed or i in self.gone, (i, self.view.visible, self.view.claims)


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 3), actions)
def test_reader_never_shows_an_id_that_may_still_commit(n, steps):
    world = _World(n)
    for step in steps:
        world.step(*step)
        world.check_safe()


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 3), actions)
def test_once_everyone_is_idle_the_reader_sees_everything(n, steps):
    world = _World(n)
    for step in steps:
        if step[0] != "die":
            world.step(*step)
    for w in list(world.batch):
        world.step("commit", world.names.index(w), 1)
    while True:  # deliver everything to everyone until nobody re-announces
        before = len(world.bus)
        for i in range(n):
            while world.heard_upto[world.names[i]] < len(world.bus):
                world.step("hear", i, 1)
        while world.read_upto < len(world.bus):
            world.step("read", 0, 1)
        if len(world.bus) == before:
            break
    world.check_safe()
    assert world.view.visible == world.seq


def test_a_busy_writer_holds_the_position_until_it_commits():
    a, b = WriterClaim(0), WriterClaim(0)
    view = StreamView(["a", "b"])
    view.announce("a", 0)
    view.announce("b", 0)
    a.begin()  # a holds id 1 in flight
    b.begin()
    view.announce("b", b.finish(2))  # b commits id 2
    assert view.visible == 0
    assert view.blocking() == "a"
    assert a.hear(2) is False  # busy: a cannot claim past its own id 1
    assert not should_reannounce("a", a, view)
    view.announce("a", a.finish(1))
    assert view.visible == 2
    assert view.blocking() is None


def test_a_dead_writer_stops_holding_others_back():
    view = StreamView(["a", "b"])
    view.announce("a", 5)
    view.announce("b", 9)
    assert view.visible == 5
    view.mark_dead("a")
    assert view.visible == 9
    view.announce("a", 9)  # restarted
    assert view.visible == 9 and not view.dead


# ---- which process owns a request ----------------------------------------------------

from client_api.forwarding import classify  # noqa: E402


def test_room_writes_belong_to_the_room():
    room = "!abc:example.org"
    quoted = "%21abc%3Aexample.org"
    for method, path in [
        (b"PUT", f"/_matrix/client/v3/rooms/{quoted}/send/m.room.message/t1"),
        (b"PUT", f"/_matrix/client/r0/rooms/{quoted}/state/m.room.name/"),
        (b"PUT", f"/_matrix/client/v3/rooms/{quoted}/redact/$e/t2"),
        (b"POST", f"/_matrix/client/v3/rooms/{quoted}/invite"),
        (b"POST", f"/_matrix/client/v3/rooms/{quoted}/upgrade"),
        (b"POST", f"/_matrix/client/v3/join/{quoted}"),
    ]:
        assert classify(method, path) == ("room", room), path
    assert classify(b"POST", "/_matrix/client/v3/join/%23alias%3Aexample.org") == ("room", "#alias:example.org")
    assert classify(b"POST", "/_matrix/client/v3/createRoom") == ("create", None)
    assert classify(b"DELETE", f"/_synapse/admin/v2/rooms/{quoted}") == ("room", room)
    assert classify(b"POST", f"/_synapse/admin/v1/purge_history/{quoted}/$e") == ("room", room)
    assert classify(b"GET", f"/_synapse/admin/v1/rooms/{quoted}") is None


def test_reads_are_answered_anywhere():
    for method, path in [
        (b"GET", "/_matrix/client/v3/rooms/%21a%3Ab/state/m.room.name/"),
        (b"GET", "/_matrix/client/v3/rooms/%21a%3Ab/messages"),
        (b"GET", "/_matrix/client/v3/rooms/%21a%3Ab/event/$e"),
        (b"GET", "/_matrix/client/versions"),
        (b"POST", "/_matrix/client/v3/search"),
        (b"GET", "/_matrix/media/v3/download/example.org/abc"),
    ]:
        assert classify(method, path) is None, path
    assert classify(b"GET", "/_matrix/client/v1/media/thumbnail/example.org/abc") == ("thumbnails", None)


def test_per_user_streams_belong_to_the_stream_owner():
    for method, path in [
        (b"PUT", "/_matrix/client/v3/rooms/%21a%3Ab/typing/%40u%3Ab"),
        (b"POST", "/_matrix/client/v3/rooms/%21a%3Ab/receipt/m.read/$e"),
        (b"POST", "/_matrix/client/v3/rooms/%21a%3Ab/read_markers"),
        (b"PUT", "/_matrix/client/v3/sendToDevice/m.x/t"),
        (b"POST", "/_matrix/client/v3/keys/upload"),
        (b"PUT", "/_matrix/client/v3/user/%40u%3Ab/account_data/m.direct"),
        (b"POST", "/_matrix/client/v3/login"),
        (b"GET", "/_matrix/client/v3/events/%24e"),
    ]:
        assert classify(method, path) == ("streams", None), path


def test_reading_the_streams_belongs_to_any_sync_process():
    for method, path in [
        (b"GET", "/_matrix/client/v3/sync"),
        (b"GET", "/_matrix/client/v3/events"),
        (b"GET", "/_matrix/client/v3/initialSync"),
        (b"GET", "/_matrix/client/v3/rooms/%21a%3Ab/initialSync"),
        (b"POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"),
    ]:
        assert classify(method, path) == ("sync", None), path


def test_presence_belongs_to_the_process_keeping_it():
    assert classify(b"PUT", "/_matrix/client/v3/presence/%40u%3Ab/status") == ("presence", None)
    assert classify(b"GET", "/_matrix/client/v3/presence/%40u%3Ab/status") == ("presence", None)


# ---- the worker config -----------------------------------------------------------------

import pytest  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from homeserver.config import Config, WorkerConfig  # noqa: E402

_LAYOUT = {"instances": {"w1": "http://127.0.0.1:9001", "w2": "http://127.0.0.1:9002",
                         "sync1": "http://127.0.0.1:9003", "client1": "http://127.0.0.1:9004"},
           "writers": ["w1", "w2"], "streams": "sync1", "internal_secret": "s" * 24}


def test_default_is_one_process_doing_everything():
    worker = Config().worker
    assert worker.role == "main" and not worker.multi_process
    assert worker.owns_streams and worker.runs_job("pushers") and worker.runs_job("appservices")


@pytest.mark.parametrize("change, message", [
    ({"role": "main"}, "role main is the only writer"),
    ({"internal_secret": None}, "internal_secret"),
    ({"internal_secret": "short"}, "internal_secret"),
    ({"streams": None}, "needs `writers` and `streams`"),
    ({"instances": {"w1": "http://x", "w2": "http://y"}}, "no internal URL for client1, sync1"),
    ({"instance_name": "w1", "role": "client"}, "exactly when its role is writer"),
])
def test_inconsistent_layouts_are_refused(change, message):
    with pytest.raises(ValidationError, match=message):
        WorkerConfig.model_validate({**_LAYOUT, "instance_name": "client1", "role": "client", **change})


def test_jobs_default_to_the_stream_owner():
    sync = WorkerConfig.model_validate({**_LAYOUT, "instance_name": "sync1", "role": "sync"})
    client = WorkerConfig.model_validate({**_LAYOUT, "instance_name": "client1", "role": "client",
                                          "jobs": {"pushers": "client1"}})
    assert sync.owns_streams and sync.runs_job("appservices") and sync.runs_job("pushers")
    assert not client.owns_streams and client.runs_job("pushers") and not client.runs_job("appservices")


def test_federation_is_refused_with_several_processes():
    with pytest.raises(ValidationError, match="federation is not yet served"):
        Config.model_validate({"worker": {**_LAYOUT, "instance_name": "w1", "role": "writer"},
                               "federation": {"enabled": True}})


def test_the_reference_layout_configs_load(tmp_path):
    """deploy/make-configs.sh writes a valid config for every instance of the layout."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from homeserver.config import load_config
    repo = Path(__file__).resolve().parents[2]
    subprocess.run(["sh", str(repo / "deploy" / "make-configs.sh"), str(tmp_path)], check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    roles = {}
    for path in sorted(tmp_path.glob("*.yaml")):
        config = load_config(path)
        roles[config.worker.instance_name] = config.worker.role
        assert {"client", "internal"} == set(config.listeners[1].resources)
    assert roles == {"client1": "client", "client2": "client", "sync1": "sync", "sync2": "sync",
                     "writer1": "writer", "writer2": "writer"}


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
       st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40))
def test_access_tokens_carry_their_users_routing_key(a, b):
    """The proxy hashes on the key (deploy/nginx/homeserver-user-key.conf): every token of
    a user has the same one; the rest of the token is random."""
    import re

    from homeserver.accounts import new_access_token, user_routing_key
    user_a, user_b = f"@{a}:example.org", f"@{b}:example.org"
    first, second = new_access_token(user_a), new_access_token(user_a)
    assert first != second
    pattern = re.compile(r"^mxt_([0-9a-f]{8})_[A-Za-z0-9_-]{40,}$")  # what the nginx map reads
    assert pattern.match(first)[1] == pattern.match(second)[1] == user_routing_key(user_a)
    if user_a != user_b:
        assert pattern.match(new_access_token(user_b))[1] == user_routing_key(user_b)
