"""Event relationships (`m.relates_to` with a `rel_type`): what counts as one, which edits
are valid, which thread an event belongs to, and the rules checked when a local client
sends a child event. Relations are recorded by the persist transaction
(storage/relations.py); their bundled aggregations are homeserver/aggregations.py."""
from __future__ import annotations

from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator

from homeserver.async_utils import KeyedLock
from homeserver.errors import MatrixError, bad_json
from homeserver.event import Event
from storage import relations as relations_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

REPLACE = "m.replace"
ANNOTATION = "m.annotation"
THREAD = "m.thread"
REFERENCE = "m.reference"
MAIN_TIMELINE = "main"   # the thread id of everything not in a thread (receipts)
MAX_KEY_LENGTH = 500     # annotation keys, as Synapse limits them
THREAD_HOPS = 3          # how far an event's relations are followed to find its thread


@dataclass(frozen=True, slots=True)
class Relation:
    rel_type: str
    parent_id: str
    key: str | None = None   # the annotation key (m.annotation only)


def relation_of(content: Any) -> Relation | None:
    """The relation an event's content declares, or None when there is none or it does
    not match the schema (such relations are ignored, as the spec says). Replies
    (`m.in_reply_to` without a rel_type) are not relations here."""
    rel = content.get("m.relates_to") if isinstance(content, dict) else None
    if not isinstance(rel, dict):
        return None
    rel_type, parent = rel.get("rel_type"), rel.get("event_id")
    if not isinstance(rel_type, str) or not rel_type or not isinstance(parent, str) \
            or not parent.startswith("$"):
        return None
    key = rel.get("key") if rel_type == ANNOTATION else None
    key = key if isinstance(key, str) else None
    if "\x00" in rel_type or "\x00" in parent or (key is not None and "\x00" in key):
        return None  # stored in text columns, which cannot hold NUL
    return Relation(rel_type, parent, key)


def event_relation(event: Event) -> Relation | None:
    """A redacted event has lost its content, and with it its relation."""
    if event.internal.get("redacted_by"):
        return None
    return relation_of(event.content)


def row_extra(content: dict) -> dict:
    """The persist row's `extra` for an event: its relation as plain data for
    storage/relations.py:record."""
    rel = relation_of(content)
    return {"relation": (rel.parent_id, rel.rel_type, rel.key)} if rel is not None else {}


def is_valid_edit(original: Event, edit: Event) -> bool:
    """The spec's validity rules for a replacement (event_replacements.md)."""
    rel = event_relation(edit)
    if rel is None or rel.rel_type != REPLACE or rel.parent_id != original.event_id:
        return False
    original_rel = relation_of(original.content)
    return (original.room_id == edit.room_id and original.sender == edit.sender
            and original.type == edit.type and not original.is_state() and not edit.is_state()
            and (original_rel is None or original_rel.rel_type != REPLACE)
            and isinstance(edit.content.get("m.new_content"), dict))


def receipt_thread_matches(chain: list[tuple[str, str, str]], event_id: str, thread_id: str) -> bool:
    """Whether a receipt on `event_id` may name `thread_id`. `chain` is the event's
    relations followed upwards, (child, parent, rel_type) from the event itself, at most
    THREAD_HOPS long. The event is in thread T if the chain reaches T by m.thread; an
    event in no thread is in the main timeline, and, as the thread's own timeline starts
    with it, an event whose chain ends at T (the root itself, or anything related to the
    root by other relations) may carry a receipt for T too."""
    top = event_id
    for _child, parent, rel_type in chain:
        if rel_type == THREAD:
            return thread_id == parent
        top = parent
    return thread_id in (MAIN_TIMELINE, top)


class _Nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> bool:
        return False


_NOTHING = _Nothing()


class Relations:
    """The send-time rules for relations from local clients (Synapse's, which the spec
    leaves to servers): the parent must be an event of the same room, an annotation needs
    a key and may not duplicate one of the sender's own, and a thread cannot start from
    an event that is itself a relation. Invalid edits are accepted and simply never
    bundled, as the spec says."""

    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        # Two identical reactions sent at once: the second waits for the first to be
        # persisted, then its duplicate check sees it.
        self._annotations = KeyedLock()

    def sending(self, room_id: str, sender: str, event_type: str,
                content: dict) -> AbstractAsyncContextManager[None]:
        """Wraps building and persisting a client's event; raises the spec's 400s.
        Events without a relation (nearly all) get a no-op at no cost."""
        rel = relation_of(content)
        if rel is None:
            return _NOTHING
        return self._checked(rel, room_id, sender, event_type)

    @asynccontextmanager
    async def _checked(self, rel: Relation, room_id: str, sender: str,
                       event_type: str) -> AsyncIterator[None]:
        head = await self.hs.room_heads.get(room_id)
        if head is None or head.membership_of(sender) != "join":
            # The auth rules will refuse the event anyway, and must do so before anything
            # here could tell a non-member about the room's events.
            yield
            return
        if rel.rel_type == ANNOTATION:
            if rel.key is None:
                raise bad_json("an m.annotation relation needs a string key")
            if len(rel.key) > MAX_KEY_LENGTH:
                raise bad_json(f"annotation keys are at most {MAX_KEY_LENGTH} characters")
        parent = await self.hs.event_cache.get(rel.parent_id)
        # Unknown and other rooms' events answer alike: nothing leaks across rooms.
        if parent is None or parent.room_id != room_id:
            raise MatrixError(400, "M_UNKNOWN", "can't send a relation to an unknown event")
        if rel.rel_type == THREAD and event_relation(parent) is not None:
            raise MatrixError(400, "M_UNKNOWN", "cannot start threads from an event with a relation")
        if rel.rel_type != ANNOTATION:
            yield
            return
        async with self._annotations.hold((rel.parent_id, event_type, rel.key, sender)):
            if await self.hs.db.run(relations_store.has_annotated, rel.parent_id, event_type,
                                    rel.key, sender):
                raise MatrixError(400, "M_DUPLICATE_ANNOTATION", "Can't send same reaction twice")
            yield

    async def receipt_thread_ok(self, event_id: str, thread_id: str) -> bool:
        """Walks the relations from the event cache (receipts are frequent; the events
        are almost always there), counting only those that were recorded: a parent
        in the same room, a child not redacted."""
        chain: list[tuple[str, str, str]] = []
        event = await self.hs.event_cache.get(event_id)
        while event is not None and len(chain) < THREAD_HOPS:
            rel = event_relation(event)
            parent = await self.hs.event_cache.get(rel.parent_id) if rel is not None else None
            if rel is None or parent is None or parent.room_id != event.room_id:
                break
            chain.append((event.event_id, rel.parent_id, rel.rel_type))
            event = parent
        return receipt_thread_matches(chain, event_id, thread_id)
