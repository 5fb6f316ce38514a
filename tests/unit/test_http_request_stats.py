"""The HTTP request counters kept in plain lists expose what prometheus-client's own
Counter and Histogram would for the same requests."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from homeserver.metrics import _LATENCY_BUCKETS, HttpRequestStats

requests = st.lists(st.tuples(st.sampled_from(["GET", "PUT"]), st.sampled_from(["/sync", "/send", "unmatched"]),
                              st.sampled_from([200, 404, 429]),
                              st.floats(min_value=0, max_value=400, allow_nan=False)
                              | st.sampled_from(list(_LATENCY_BUCKETS))),  # exactly on a bound
                    max_size=40)


def samples(registry: CollectorRegistry) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name.startswith("homeserver_http") and not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@settings(max_examples=200, deadline=None)
@given(requests)
def test_same_exposition_as_prometheus_client(reqs):
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = HttpRequestStats(_LATENCY_BUCKETS)
    ours_registry.register(ours)
    answered = Counter("homeserver_http_requests_total", "x", ["method", "route", "status"],
                       registry=theirs_registry)
    durations = Histogram("homeserver_http_request_duration_seconds", "x", ["method", "route"],
                          buckets=_LATENCY_BUCKETS, registry=theirs_registry)
    for method, route, status, seconds in reqs:
        ours.observe(method, route, status, seconds)
        answered.labels(method, route, str(status)).inc()
        durations.labels(method, route).observe(seconds)
    got, want = samples(ours_registry), samples(theirs_registry)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_unknown_methods_share_one_series_and_new_series_stop_at_the_cap():
    stats = HttpRequestStats((0.1,))
    for method in ("BREW", "WHEN", "GET"):
        stats.observe(method, "unmatched", 404, 0.01)
    stats.MAX_SERIES = 3
    for route in ("/a", "/b", "/c"):
        stats.observe("GET", route, 200, 0.01)
    registry = CollectorRegistry()
    registry.register(stats)
    got = samples(registry)
    series = {(dict(labels)["method"], dict(labels)["route"]) for name, labels in got}
    assert series == {("other", "unmatched"), ("GET", "unmatched"), ("GET", "/a")}
    assert got[("homeserver_http_requests_total",
                (("method", "other"), ("route", "unmatched"), ("status", "404")))] == 2
