"""A listener behind a reverse proxy (`x_forwarded: true`) takes the client's address from
X-Forwarded-For, so limits by address count each client apart; any other listener keeps
the connection's address whatever a request claims."""
from __future__ import annotations

import pytest

from tests.server_harness import Http, ServerProcess, free_port


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory):
    port, direct = free_port(), free_port()
    srv = ServerProcess(tmp_path_factory.mktemp("hs"), port=port, extra_config=(
        "listeners:\n"
        f"  - {{port: {port}, bind_address: 127.0.0.1, resources: [client], x_forwarded: true}}\n"
        f"  - {{port: {direct}, bind_address: 127.0.0.1, resources: [client]}}\n"
        "rc_registration: {per_second: 0.001, burst_count: 1}\n"))
    srv.start()
    try:
        yield srv.base_url, f"http://127.0.0.1:{direct}"
    finally:
        srv.stop()


def _register(url: str, name: str, address: str) -> int:
    status, _ = Http(url).request("POST", "/_matrix/client/v3/register", {
        "username": name, "password": "secret-pw", "auth": {"type": "m.login.dummy"}},
        headers={"X-Forwarded-For": address})
    return status


def test_each_client_behind_the_proxy_has_its_own_bucket(behind_proxy, unique):
    proxied, _ = behind_proxy
    assert _register(proxied, unique("a"), "203.0.113.1") == 200
    assert _register(proxied, unique("b"), "203.0.113.1, 10.0.0.1") == 429  # the first entry is the client
    assert _register(proxied, unique("c"), "203.0.113.2") == 200
    assert _register(proxied, unique("d"), "2001:db8::7") == 200


def test_a_listener_not_behind_a_proxy_ignores_the_header(behind_proxy, unique):
    _, direct = behind_proxy
    assert _register(direct, unique("e"), "198.51.100.1") == 200  # counted as 127.0.0.1
    assert _register(direct, unique("f"), "198.51.100.2") == 429


def test_a_header_that_is_no_address_is_ignored(behind_proxy, unique):
    proxied, direct = behind_proxy
    _register(direct, unique("g"), "ignored")  # 127.0.0.1's bucket is full now
    assert _register(proxied, unique("h"), "not-an-address") == 429  # counted as 127.0.0.1
