"""Scale-out's pure parts: which writer owns a room, and the multi-writer stream
positions (a reader never shows a position while an id at or below it may still commit,
and idle writers never hold the others back)."""
from hypothesis import given, settings, strategies as st

from homeserver.sharding import writer_for_room
from homeserver.stream_positions import StreamView, WriterClaim

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
                self.heard_upto[w] = len(self.bus)
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
            _, pos = self.bus[self.heard_upto[w]]
            self.heard_upto[w] += 1
            if claim.hear(pos):
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
