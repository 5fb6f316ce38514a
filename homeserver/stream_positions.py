"""Stream positions with several writers (pure logic; homeserver/replication.py wires it).

Every writer takes event stream orderings from one PostgreSQL sequence, so ids are
unique and roughly time-ordered, but they commit out of order across writers: writer A
may hold id 10 in an open transaction while writer B has committed 11. A reader must not
show 11 until 10 is committed (or has failed): a token at 11 would skip 10 forever.

So each writer announces a *claim*: every id it allocated at or below it is persisted.
A writer's claim stays put while it has a batch in flight (from before it asks for ids
until the commit); after the commit it moves to the batch's highest id, or to the
highest claim it has heard from the other writers if that is higher: a writer with
nothing in flight has nothing below any id already allocated still to come, because its
future ids come from the sequence, above every id handed out so far. An idle writer that
hears a higher claim re-announces, so one busy writer never holds the others back; only
the writer whose announced claim is the lowest does (`should_reannounce`): re-announcing
a claim that is not the lowest moves no reader, and with N writers it would cost N-1
small transactions per batch.

A reader's visible position is the lowest claim of the live writers. A writer that has
never announced, or whose every database session is gone (it died; PostgreSQL has
aborted whatever it had in flight), holds nothing back."""
from __future__ import annotations


class WriterClaim:
    def __init__(self, position: int) -> None:
        self.position = position  # announced: all of my ids <= position are persisted
        self.heard = position     # the highest claim heard from anyone
        self.busy = False

    def begin(self) -> None:
        """Before asking the sequence for ids: the claim is frozen until `finish`."""
        self.busy = True

    def finish(self, highest_allocated: int | None) -> int:
        """The batch committed or failed (failed ids are gaps that never fill)."""
        self.busy = False
        self.position = max(self.position, self.heard, highest_allocated or 0)
        self.heard = max(self.heard, self.position)
        return self.position

    def hear(self, position: int) -> bool:
        """Another writer's claim; True when this idle writer's claim rose."""
        if position > self.heard:
            self.heard = position
        if not self.busy and self.heard > self.position:
            self.position = self.heard
            return True
        return False


def should_reannounce(me: str, claim: WriterClaim, view: "StreamView") -> bool:
    """An idle writer whose claim rose past what it announced, and whose announced claim
    is the one holding readers back."""
    announced = view.claims.get(me, -1)
    return not claim.busy and claim.position > announced and view.is_lowest(me)


class StreamView:
    """A reader's view of the writers' claims. Claims are kept from every writer heard;
    only the *members* (the writers sharing the rooms, homeserver/writer_layout.py) count,
    so a writer joining the layout counts from the claim it announced when it started."""

    def __init__(self, writers: list[str]) -> None:
        self.writers = set(writers)
        self.heard: dict[str, int] = {}
        self.dead: set[str] = set()

    @property
    def claims(self) -> dict[str, int]:
        return {w: p for w, p in self.heard.items() if w in self.writers}

    def set_writers(self, writers: "set[str] | list[str]") -> None:
        self.writers = set(writers)

    def add_writer(self, writer: str) -> None:
        self.writers.add(writer)

    def announce(self, writer: str, position: int) -> None:
        self.dead.discard(writer)
        if position > self.heard.get(writer, -1):
            self.heard[writer] = position

    def mark_dead(self, writer: str) -> None:
        """No session of the writer is left: nothing of it can still commit."""
        self.dead.add(writer)

    def is_lowest(self, writer: str) -> bool:
        claims = self.claims
        live = [p for w, p in claims.items() if w not in self.dead]
        return writer not in claims or not live or claims[writer] <= min(live)

    def blocking(self) -> str | None:
        """The live writer holding the visible position below the highest claim."""
        claims = self.claims
        live = {w: p for w, p in claims.items() if w not in self.dead}
        if not live:
            return None
        low = min(live, key=lambda w: live[w])
        return low if live[low] < max(claims.values()) else None

    @property
    def visible(self) -> int:
        claims = self.claims
        if not claims:
            return 0
        live = [p for w, p in claims.items() if w not in self.dead]
        return min(live) if live else max(claims.values())
