"""Prometheus metrics (prometheus-client's default registry, which also carries its
process and Python collectors). Hot paths pay one counter increment or histogram
observation per request or per persisted batch; gauges that describe state (long-polls
open, pool connections in use, presence, application-service queues) are read when
scraped, so they cost nothing in between. Every metric is listed in docs/metrics.md."""
from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Iterable

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from homeserver.server import HomeServer

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 120.0, 300.0)


class HttpRequestStats(Collector):
    """`homeserver_http_requests_total` (by method, route template and status) and
    `homeserver_http_request_duration_seconds` (by method and route template), counted
    in plain lists: every request is counted, and prometheus-client's labelled children
    take a lock per increment, several per histogram observation (a measurable share of
    answering a woken long-poll). Only the reactor thread counts; a scrape (on a
    WSGI thread) copies each series first, under the GIL."""

    # A client may send any method name: others are counted as "other".
    METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
    # Label sets are route templates and these methods, so they are few; a backstop.
    MAX_SERIES = 10_000

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self._bounds = list(buckets)
        self._answered: dict[tuple[str, str, str], list[int]] = {}
        # (method, route) -> [count per bucket..., count above the last bound, sum]
        self._durations: dict[tuple[str, str], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in self.METHODS:
            method = "other"
        key = (method, route)
        series = self._durations.get(key)
        if series is None:
            if len(self._durations) >= self.MAX_SERIES:
                return
            series = self._durations[key] = [0] * (len(self._bounds) + 1) + [0.0]
        series[bisect_left(self._bounds, seconds)] += 1
        series[-1] += seconds
        answered_key = (method, route, str(status))
        answered = self._answered.get(answered_key)
        if answered is None:
            if len(self._answered) >= self.MAX_SERIES:
                return
            answered = self._answered[answered_key] = [0]
        answered[0] += 1

    def collect(self) -> Iterable[Any]:
        answered = CounterMetricFamily(
            "homeserver_http_requests_total", "HTTP requests answered, by route template, method and status.",
            labels=["method", "route", "status"])
        for labels, (count,) in list(self._answered.items()):
            answered.add_metric(list(labels), count)
        durations = HistogramMetricFamily(
            "homeserver_http_request_duration_seconds",
            "Time from receiving a request to answering it (long-polls included), by route template and method.",
            labels=["method", "route"])
        for labels, series in list(self._durations.items()):
            series = list(series)
            cumulative, buckets = 0, []
            for bound, count in zip(self._bounds + [float("inf")], series[:-1]):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            durations.add_metric(list(labels), buckets, series[-1])
        return [answered, durations]


HTTP = HttpRequestStats(_LATENCY_BUCKETS)
REGISTRY.register(HTTP)

EVENTS_PERSISTED = Counter("homeserver_events_persisted_total", "Room events committed to PostgreSQL.")
PERSIST_BATCH_SIZE = Histogram(
    "homeserver_persist_batch_events", "Events per committed persist batch (group commit).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200))
PERSIST_BATCH_DURATION = Histogram(
    "homeserver_persist_batch_duration_seconds", "Time to write one persist batch, retries included.",
    buckets=_LATENCY_BUCKETS)
PERSIST_FAILURES = Counter("homeserver_persist_batch_failures_total", "Persist batches that wrote nothing.")

SYNC_WAKEUPS = Counter("homeserver_sync_longpoll_wakeups_total",
                       "Waiting long-polls (/sync, /events) woken by the notifier.")
NOTIFIER_FANOUT = Histogram(
    "homeserver_notifier_fanout_users", "Users considered per notification (a batch, typing, a receipt...).",
    buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000))

DB_TRANSACTION_DURATION = Histogram(
    "homeserver_db_transaction_duration_seconds",
    "Time to run one database transaction on a pool thread (queries and COMMIT, retries included).",
    buckets=_LATENCY_BUCKETS)
DB_TRANSACTION_ERRORS = Counter("homeserver_db_transaction_errors_total", "Database transactions that raised.")

APPSERVICE_TRANSACTIONS = Counter(
    "homeserver_appservice_transactions_total", "Transactions PUT to application services, by outcome.",
    ["service", "outcome"])


def observe_db_transaction(seconds: float, failed: bool) -> None:
    DB_TRANSACTION_DURATION.observe(seconds)
    if failed:
        DB_TRANSACTION_ERRORS.inc()


class _ServerState(Collector):
    """Gauges read from the running server when scraped."""

    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs

    def collect(self) -> Iterable[Any]:
        hs = self.hs
        yield _gauge("homeserver_http_requests_in_flight", "Requests being handled now (long-polls included).",
                     getattr(hs, "requests_in_flight", 0))
        if hs.db is not None:
            yield _gauge("homeserver_db_connections_in_use", "Pool threads running a transaction now.",
                         hs.db.in_use)
            yield _gauge("homeserver_db_connections_max", "Size of the database pool.", hs.db.max_connections)
        persister = getattr(hs, "persister", None)
        if persister is not None:
            yield _gauge("homeserver_persist_queue_events", "Events accepted and waiting to be written.",
                         persister.queued)
        sync = hs.sync
        if sync is not None:
            yield _gauge("homeserver_sync_longpolls_open", "Long-polls (/sync, /events) waiting for news.",
                         sync.notifier.waiting_count())
            if hs.config.presence.enabled:
                by_state = GaugeMetricFamily("homeserver_presence_users",
                                             "Users known to presence, by state.", labels=["state"])
                for state, n in sync.presence.count_by_state().items():
                    by_state.add_metric([state], n)
                yield by_state
        replication = hs.replication
        if replication is not None:  # several processes (docs/scaling.md)
            claims = GaugeMetricFamily("homeserver_replication_writer_position",
                                       "Each writer's announced event stream position, as this process heard it.",
                                       labels=["writer"])
            for writer, position in replication.view.claims.items():
                claims.add_metric([writer], position)
            yield claims
            yield _gauge("homeserver_replication_visible_position",
                         "The event stream position this process has replayed up to.", replication.replayed)
            yield _gauge("homeserver_replication_behind",
                         "Positions between the highest writer claim and what this process shows.",
                         max(replication.view.claims.values(), default=0) - replication.replayed)
        appservices = hs.appservices
        if appservices is not None:
            lag = GaugeMetricFamily(
                "homeserver_appservice_queue_events",
                "Stream positions an application service's pusher is behind (events not yet delivered or skipped).",
                labels=["service"])
            eph = GaugeMetricFamily("homeserver_appservice_ephemeral_queued",
                                    "Ephemeral events (typing, receipts, presence) waiting for a transaction.",
                                    labels=["service"])
            retrying = GaugeMetricFamily("homeserver_appservice_transaction_retrying",
                                         "1 while a transaction to the service is failing and being retried.",
                                         labels=["service"])
            head = persister.max_stream_ordering if persister is not None else 0
            for as_id, pusher in appservices.pushers.items():
                lag.add_metric([as_id], max(0, head - pusher.last_stream))
                eph.add_metric([as_id], len(pusher._ephemeral))
                retrying.add_metric([as_id], 1 if pusher.failing else 0)
            yield lag
            yield eph
            yield retrying


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


_collector: _ServerState | None = None


def register_server(hs: "HomeServer") -> None:
    """Attach the state gauges of `hs` (one server per process) and the database hook."""
    global _collector
    if _collector is not None:
        REGISTRY.unregister(_collector)
    _collector = _ServerState(hs)
    REGISTRY.register(_collector)


def metrics_resource() -> Any:
    """A Twisted resource rendering the registry in the Prometheus text format."""
    from prometheus_client.twisted import MetricsResource
    return MetricsResource(registry=REGISTRY)
