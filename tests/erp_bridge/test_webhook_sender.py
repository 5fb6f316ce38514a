"""The webhook sender's queue logic, with a fake outbox and a fake clock: per-room order,
retries of the same bytes, capped exponential backoff, rooms independent, wake-ups."""
from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.task import Clock

from appservice.erp_bridge import store
from appservice.erp_bridge.webhook import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, WebhookSender, verify


class FakeDb:
    """The four outbox functions the sender uses, over a list."""

    def __init__(self) -> None:
        self.rows: list[store.OutboxItem] = []
        self.failures: dict[int, int] = {}

    def add(self, seq: int, room: str) -> None:
        self.rows.append(store.OutboxItem(seq, room, f"$e{seq}", json.dumps({"seq": seq}), 0))

    def run(self, fn, *args):
        if fn is store.outbox_rooms:
            return defer.succeed(sorted({r.room_id for r in self.rows}))
        if fn is store.outbox_head:
            mine = [r for r in self.rows if r.room_id == args[0]]
            return defer.succeed(min(mine, key=lambda r: r.seq) if mine else None)
        if fn is store.outbox_delivered:
            self.rows = [r for r in self.rows if r.seq != args[0]]
            return defer.succeed(None)
        if fn is store.outbox_failed:
            self.failures[args[0]] = self.failures.get(args[0], 0) + 1
            return defer.succeed(None)
        raise AssertionError(fn)


class FakeErp:
    def __init__(self) -> None:
        self.calls: list[tuple[float, bytes, dict]] = []
        self.status = 200

    def post(self, clock: Clock):
        async def post(url, body, headers):
            self.calls.append((clock.seconds(), body, headers))
            if isinstance(self.status, Exception):
                raise self.status
            return self.status
        return post


def make(db, erp, clock, **kw):
    return WebhookSender(db, "http://erp/hook", "secret", clock=clock, post=erp.post(clock),
                         initial_backoff_s=0.5, max_backoff_s=10, **kw)


def test_delivers_each_room_in_order():
    db, erp, clock = FakeDb(), FakeErp(), Clock()
    for seq, room in [(1, "!a"), (2, "!b"), (3, "!a"), (4, "!a"), (5, "!b")]:
        db.add(seq, room)
    sender = make(db, erp, clock)
    defer.ensureDeferred(sender.start())
    bodies = [json.loads(b)["seq"] for _, b, _ in erp.calls]
    assert [s for s in bodies if s in (1, 3, 4)] == [1, 3, 4]
    assert [s for s in bodies if s in (2, 5)] == [2, 5]
    assert db.rows == []
    _, body, headers = erp.calls[0]
    assert headers[IDEMPOTENCY_HEADER] == ["$e1"]
    assert verify("secret", body, headers[SIGNATURE_HEADER][0], now=clock.seconds())
    sender.stop()


def test_failure_retries_same_message_and_blocks_only_its_room():
    db, erp, clock = FakeDb(), FakeErp(), Clock()
    db.add(1, "!a")
    db.add(2, "!a")
    erp.status = 503
    sender = make(db, erp, clock)
    defer.ensureDeferred(sender.start())
    for _ in range(8):
        clock.advance(10)
    assert len(erp.calls) == 9
    assert {json.loads(b)["seq"] for _, b, _ in erp.calls} == {1}   # never overtaken
    assert len({b for _, b, _ in erp.calls}) == 1                     # same bytes every time
    assert db.failures[1] == 9

    # Another room is not held up by the failing one: delivered at once.
    db.add(3, "!b")
    erp.status = 200
    sender.wake(["!b"])
    assert json.loads(erp.calls[-1][1])["seq"] == 3
    assert [r.seq for r in db.rows] == [1, 2]
    # The failing room resumes at its next retry, in order.
    clock.advance(10)
    assert [json.loads(b)["seq"] for _, b, _ in erp.calls][-2:] == [1, 2]
    assert db.rows == []
    sender.stop()


def test_backoff_sequence_is_exponential_and_capped():
    db, erp, clock = FakeDb(), FakeErp(), Clock()
    db.add(1, "!a")
    erp.status = ConnectionRefusedError("down")
    sender = make(db, erp, clock)
    defer.ensureDeferred(sender.start())
    for _ in range(200):
        clock.advance(0.25)
    times = [t for t, _, _ in erp.calls]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert [round(g * 4) / 4 for g in gaps[:7]] == [0.5, 1, 2, 4, 8, 10, 10]
    sender.stop()


def test_wake_while_busy_is_not_lost():
    db, erp, clock = FakeDb(), FakeErp(), Clock()
    pending: list[defer.Deferred] = []

    async def slow_post(url, body, headers):
        d = defer.Deferred()
        pending.append(d)
        erp.calls.append((clock.seconds(), body, headers))
        return await d

    sender = WebhookSender(db, "http://erp/hook", "secret", clock=clock, post=slow_post)
    db.add(1, "!a")
    sender.wake(["!a"])
    db.add(2, "!a")          # queued while the first delivery is in flight
    sender.wake(["!a"])
    pending.pop(0).callback(200)
    pending.pop(0).callback(200)
    assert db.rows == [] and len(erp.calls) == 2
    sender.stop()
