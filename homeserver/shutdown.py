"""Graceful shutdown on SIGTERM (run before the reactor stops): stop accepting, let the
requests in flight finish (a send gets its event committed and its 200), write what the
persister still holds, answer the waiting long-polls with what they have, let each
application-service pusher finish the transaction it is sending (its position is stored,
so a restart resumes there). Each step is bounded by `shutdown.grace_period_ms`; then the
reactor stops and HomeServer.shutdown saves presence and last-seen data and stops the
database pool and the embedded PostgreSQL."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, reactor, task

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
_POLL_S = 0.05


async def _until(done, deadline: float) -> bool:
    while not done():
        if time.monotonic() >= deadline:
            return False
        await task.deferLater(reactor, _POLL_S, lambda: None)
    return True


async def _bounded(d: defer.Deferred, deadline: float) -> bool:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    try:
        await d.addTimeout(remaining, reactor)
        return True
    except defer.TimeoutError:
        return False


class Connections:
    """The open HTTP connections of the listeners, so shutdown can close them gently
    (loseConnection sends what is buffered first; the reactor's own final disconnect
    would drop answers not yet on the wire)."""

    def __init__(self) -> None:
        self.open: set[Any] = set()

    def track(self, site: Any) -> None:
        build = site.buildProtocol

        def build_tracked(addr: Any) -> Any:
            protocol = build(addr)
            if protocol is None:
                return None
            self.open.add(protocol)
            lost = protocol.connectionLost

            def connection_lost(reason: Any) -> Any:
                self.open.discard(protocol)
                return lost(reason)
            protocol.connectionLost = connection_lost
            return protocol
        site.buildProtocol = build_tracked

    async def close_all(self, deadline: float) -> None:
        for protocol in list(self.open):
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.loseConnection()
        if not await _until(lambda: not self.open, deadline):
            logger.warning("shutdown: %d connection(s) did not close in time", len(self.open))


async def drain(hs: "HomeServer", ports: list[Any], connections: Connections) -> None:
    deadline = time.monotonic() + hs.config.shutdown.grace_period_ms / 1000.0
    hs.draining = True
    await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports], consumeErrors=True)
    if not hs.ready:  # start-up never finished: nothing to drain
        await connections.close_all(deadline)
        return
    sync = hs.sync
    waiting = (lambda: sync.notifier.waiting_count()) if sync is not None else (lambda: 0)
    if not await _until(lambda: hs.requests_in_flight - waiting() <= 0, deadline):
        logger.warning("shutdown: %d request(s) still running after the grace period", hs.requests_in_flight)
    if not await _bounded(hs.persister.wait_idle(), deadline):
        logger.warning("shutdown: %d event(s) still queued after the grace period", hs.persister.queued)
    if sync is not None:
        sync.notifier.close()
        await _until(lambda: hs.requests_in_flight <= 0, deadline)
    await connections.close_all(deadline)
    if hs.appservices is not None:
        hs.appservices.stop()
        for pusher in hs.appservices.pushers.values():
            if not await _bounded(pusher.wait_stopped(), deadline):
                logger.warning("shutdown: transaction to %s still in flight", pusher.reg.id)
    logger.info("shutdown: drained (%d request(s) in flight)", hs.requests_in_flight)
