"""homeserver.held_writes: what is held inside a burst is sent once, when the outermost
burst closes (also when it closes by an error), and nothing is held outside one."""
from __future__ import annotations

import pytest

from homeserver import held_writes


class Recorder:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def send_held(self) -> None:
        self.log.append(self.name)


def test_nothing_is_held_outside_a_burst():
    assert not held_writes.holding()


def test_holders_are_sent_in_order_when_the_outer_burst_closes():
    log: list[str] = []
    with held_writes.held():
        held_writes.register(Recorder(log, "a"))
        with held_writes.held():  # part of the outer burst
            assert held_writes.holding()
            held_writes.register(Recorder(log, "b"))
        assert log == [] and held_writes.holding()
    assert log == ["a", "b"] and not held_writes.holding()
    with held_writes.held():
        pass
    assert log == ["a", "b"], "a holder is sent once"


def test_an_error_inside_a_burst_still_sends_what_it_held():
    log: list[str] = []
    with pytest.raises(RuntimeError):
        with held_writes.held():
            held_writes.register(Recorder(log, "a"))
            raise RuntimeError("a waiter failed")
    assert log == ["a"] and not held_writes.holding()


class Broken:
    def send_held(self) -> None:
        raise OSError("connection gone")


def test_one_failing_holder_does_not_keep_the_others_answers():
    log: list[str] = []
    with held_writes.held():
        held_writes.register(Broken())
        held_writes.register(Recorder(log, "after"))
    assert log == ["after"]
