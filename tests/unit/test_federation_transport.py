"""Pure parts of the federation transport: X-Matrix headers (sign, parse, verify) and
server discovery's decisions (explicit ports skip .well-known and SRV; delegation; SRV
order; port 8448; caching)."""
from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from signedjson.key import generate_signing_key, get_verify_key

from homeserver.federation.discovery import Route, ServerResolver, parse_cache_control, split_server_name
from homeserver.federation.request_auth import BadAuthorization, parse_x_matrix, sign_request, verify_request

KEY = generate_signing_key("k1")
VERIFY = get_verify_key(KEY)  # carries its key id, as the key ring's do
names = st.from_regex(r"[a-z0-9.\-]{1,20}(:[0-9]{1,5})?", fullmatch=True)


@given(origin=names, destination=names, uri=st.from_regex(r"/[\x21-\x7e]{0,40}", fullmatch=True),
       content=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)))
def test_signed_requests_verify_and_parse_back(origin, destination, uri, content):
    header = sign_request("PUT", uri, origin, destination, KEY, content)
    x = parse_x_matrix(header)
    assert (x.origin, x.destination, x.key) == (origin, destination, "ed25519:k1")
    verify_request(x, "PUT", uri, destination, content, VERIFY)
    with pytest.raises(BadAuthorization):
        verify_request(x, "POST", uri, destination, content, VERIFY)
    with pytest.raises(BadAuthorization):
        verify_request(x, "PUT", uri + "x", destination, content, VERIFY)


def test_header_variants():
    # Unquoted values, spaces, and no destination (older servers) parse too.
    x = parse_x_matrix('X-Matrix origin=a.org, key="ed25519:1", sig="c2ln"')
    assert (x.origin, x.destination, x.key, x.sig) == ("a.org", None, "ed25519:1", "c2ln")
    for bad in ('Bearer abc', 'X-Matrix origin="a"', 'X-Matrix origin="a",key=', 'X-Matrix ,,,'):
        with pytest.raises(BadAuthorization):
            parse_x_matrix(bad)


class FakeDns:
    def __init__(self, well_known=None, srv=None):
        self.well_known = well_known or {}
        self.srv = srv or {}
        self.calls: list[str] = []

    async def fetch(self, host):
        self.calls.append("wk:" + host)
        if host not in self.well_known:
            raise ValueError("404")
        return self.well_known[host], 3600

    async def lookup(self, name):
        self.calls.append("srv:" + name)
        return self.srv.get(name, [])


def resolve(dns: FakeDns, name: str) -> list[Route]:
    return asyncio.run(ServerResolver(dns.fetch, dns.lookup).resolve(name))


def test_ip_literals_and_explicit_ports_skip_lookups():
    dns = FakeDns()
    assert resolve(dns, "127.0.0.1:8449") == [Route("127.0.0.1", 8449, "127.0.0.1")]
    assert resolve(dns, "[::1]") == [Route("::1", 8448, "::1")]
    assert resolve(dns, "example.org:1234") == [Route("example.org", 1234, "example.org")]
    assert dns.calls == []


def test_well_known_delegation_then_srv_then_default_port():
    dns = FakeDns(well_known={"example.org": "matrix.example.org"},
                  srv={"_matrix-fed._tcp.matrix.example.org": [("host1.example.org", 443)]})
    assert resolve(dns, "example.org") == [Route("host1.example.org", 443, "matrix.example.org")]
    dns = FakeDns(well_known={"example.org": "matrix.example.org:8000"})
    assert resolve(dns, "example.org") == [Route("matrix.example.org", 8000, "matrix.example.org")]
    assert dns.calls == ["wk:example.org"]
    # No .well-known: SRV on the name itself, the new service name first, then the old.
    dns = FakeDns(srv={"_matrix._tcp.example.org": [("old.example.org", 8443)]})
    assert resolve(dns, "example.org") == [Route("old.example.org", 8443, "example.org")]
    assert dns.calls == ["wk:example.org", "srv:_matrix-fed._tcp.example.org", "srv:_matrix._tcp.example.org"]
    assert resolve(FakeDns(), "example.org") == [Route("example.org", 8448, "example.org")]
    # A .well-known naming garbage counts as none.
    assert resolve(FakeDns(well_known={"example.org": "a:b:c:d"}), "example.org") == [
        Route("example.org", 8448, "example.org")]


def test_answers_are_cached():
    dns = FakeDns(well_known={"example.org": "m.example.org"})
    resolver = ServerResolver(dns.fetch, dns.lookup)
    asyncio.run(resolver.resolve("example.org"))
    asyncio.run(resolver.resolve("example.org"))
    assert dns.calls.count("wk:example.org") == 1


def test_split_and_cache_control():
    assert split_server_name("[2001:db8::1]:80") == ("2001:db8::1", 80)
    assert split_server_name("a.org") == ("a.org", None)
    assert parse_cache_control("public, max-age=600") == 600
    assert parse_cache_control("no-store") == 60
    assert parse_cache_control(None) == 24 * 3600
