"""HTTP/1.1 framing of JSON responses on one kept-alive connection: pipelined requests
are answered in order, each with a Content-Length that matches its body, a Date, and no
body for HEAD; `Connection: close` ends the connection after its answer. (JSON answers
leave the server as one buffer, head and body together: this pins that the shortcut keeps
the framing twisted.web would give; answers of woken long-polls are held and sent together
at the end of their slice: that keeps their order with what follows on the connection.)"""
from __future__ import annotations

import json
import socket
import time
import urllib.parse
from urllib.parse import urlsplit

from tests.server_harness import pair_in_room


def _read_responses(sock: socket.socket, methods: list[str]) -> list[tuple[int, dict[str, str], bytes]]:
    """The answers, in order, to requests made with `methods`; "INTERIM" stands for a
    `100 Continue` (no body) and "CLOSING" for an answer without a length, read to the
    end of the connection."""
    buf = b""
    out = []
    for method in methods:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before the answer to {method}"
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        version, status, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        if method == "CLOSING":
            while chunk := sock.recv(65536):
                buf += chunk
            body_len = len(buf)
        else:
            body_len = 0 if method in ("HEAD", "INTERIM") else int(headers["content-length"])
        while len(buf) < body_len:
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside a body"
            buf += chunk
        out.append((int(status), headers, buf[:body_len]))
        buf = buf[body_len:]
    assert buf == b"", f"bytes after the last answer: {buf[:80]!r}"
    return out


def test_pipelined_json_answers_keep_their_framing(server):
    url = urlsplit(server.base_url)
    requests = [("HEAD", "/_matrix/client/versions", ""),
                ("GET", "/_matrix/client/versions", ""),
                ("GET", "/_matrix/client/v3/nothing-here", ""),
                ("GET", "/_matrix/client/v3/account/whoami", "Connection: close\r\n")]
    raw = "".join(f"{m} {p} HTTP/1.1\r\nHost: {url.netloc}\r\n{extra}\r\n" for m, p, extra in requests)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(raw.encode("ascii"))
        answers = _read_responses(sock, [m for m, _, _ in requests])
        sock.settimeout(10)
        assert sock.recv(1) == b"", "the connection stays open after Connection: close"
    (head_status, head_headers, head_body), (get_status, get_headers, get_body), \
        (missing_status, _, missing_body), (anon_status, anon_headers, anon_body) = answers
    assert (head_status, get_status, missing_status, anon_status) == (200, 200, 404, 401)
    assert head_body == b"" and int(head_headers["content-length"]) == len(get_body)
    assert "versions" in json.loads(get_body)
    assert json.loads(missing_body)["errcode"] == "M_UNRECOGNIZED"
    assert json.loads(anon_body)["errcode"] == "M_MISSING_TOKEN"
    for headers in (head_headers, get_headers, anon_headers):
        assert headers["content-type"] == "application/json"
        assert headers["date"].endswith("GMT")
        assert headers["access-control-allow-origin"] == "*"
    assert anon_headers.get("connection", "").lower() == "close"


def _woken_long_poll_then(server, unique, behind: list[tuple[str, str, str]], reads: list[str]):
    """bob's long-poll, with `behind` (method, path, extra header lines and body) pipelined
    behind it on one connection; a message from alice wakes it. The answers as read with
    `reads` (after the long-poll's, which is checked to carry the message)."""
    alice, bob, room_id = pair_in_room(server.base_url, unique("a"), unique("b"))
    status, first = bob.request("GET", "/_matrix/client/v3/sync?timeout=0")
    assert status == 200, first
    url = urlsplit(server.base_url)
    auth = f"Authorization: Bearer {bob.token}\r\n"
    since = urllib.parse.quote(first["next_batch"])
    requests = [("GET", f"/_matrix/client/v3/sync?timeout=20000&since={since}", auth + "\r\n"), *behind]
    raw = "".join(f"{m} {p} HTTP/1.1\r\nHost: {url.netloc}\r\n{rest.replace('AUTH', auth)}"
                  for m, p, rest in requests)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(raw.encode("ascii"))
        time.sleep(0.5)  # the long-poll waits
        status, sent = alice.request("PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}"
                                            f"/send/m.room.message/{unique('t')}", {"msgtype": "m.text", "body": "wake"})
        assert status == 200, sent
        answers = _read_responses(sock, ["GET", *reads])
        if reads[-1] != "CLOSING":
            sock.settimeout(10)
            assert sock.recv(1) == b"", "the connection stays open after Connection: close"
    sync_status, _, sync_body = answers[0]
    assert sync_status == 200, sync_body[:200]
    timeline = json.loads(sync_body)["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["content"].get("body") for e in timeline if e["type"] == "m.room.message"] == ["wake"]
    return bob, answers[1:]


def test_a_woken_long_poll_answer_stays_ahead_of_the_requests_pipelined_behind_it(server, unique):
    # The long-poll is answered inside a burst; the HEAD behind it is answered while its
    # answer is still held (twisted.web writes a HEAD's head itself), then whoami.
    bob, answers = _woken_long_poll_then(server, unique, [
        ("HEAD", "/_matrix/client/versions", "\r\n"),
        ("GET", "/_matrix/client/v3/account/whoami", "AUTHConnection: close\r\n\r\n")], ["HEAD", "GET"])
    (head_status, head_headers, head_body), (who_status, _, who_body) = answers
    assert (head_status, who_status) == (200, 200)
    assert head_body == b"" and int(head_headers["content-length"]) > 0
    assert json.loads(who_body)["user_id"] == bob.user_id


def test_twisteds_own_answers_to_a_pipelined_request_come_after_the_woken_long_polls(server, unique):
    """Twisted writes some answers to the socket itself, as it parses the next request:
    a `100 Continue`, and the 400 for a request it cannot parse."""
    body = '{"held": "behind"}'
    _, answers = _woken_long_poll_then(server, unique, [
        ("PUT", "/_matrix/client/v3/user/%40nobody%3Alocalhost/account_data/x",
         f"AUTHConnection: close\r\nExpect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}")],
        ["INTERIM", "PUT"])
    (interim_status, _, _), (put_status, _, put_body) = answers
    assert interim_status == 100
    assert put_status in (403, 404), put_body  # another user's account data: refused, but answered
    _, answers = _woken_long_poll_then(server, unique, [
        ("GET", "/_matrix/client/versions", "a header line without a colon\r\n\r\n")], ["CLOSING"])
    assert answers[0][0] == 400


def test_json_answers_carry_each_header_once(server):
    """The JSON answer's head is composed from the headers set for the request and a
    block of fixed ones: each appears once, with the request's own id and a length that
    matches the body, for a success and for errors alike."""
    url = urlsplit(server.base_url)
    paths = ["/_matrix/client/versions", "/_matrix/client/v3/nothing-here", "/_matrix/client/v3/account/whoami"]
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall("".join(f"GET {p} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n" for p in paths).encode("ascii"))
        buf = b""
        for expected_status in (200, 404, 401):
            while b"\r\n\r\n" not in buf:
                buf += sock.recv(65536)
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            assert lines[0].startswith(f"HTTP/1.1 {expected_status} "), lines[0]
            names = [line.split(":", 1)[0].lower() for line in lines[1:]]
            assert len(names) == len(set(names)), f"a header twice: {names}"
            for name in ("content-type", "content-length", "cache-control", "access-control-allow-origin",
                         "x-request-id", "date", "server"):
                assert name in names, (name, lines)
            length = int(next(line.split(":", 1)[1] for line in lines[1:] if line.lower().startswith("content-length")))
            while len(buf) < length:
                buf += sock.recv(65536)
            body, buf = buf[:length], buf[length:]
            assert isinstance(json.loads(body), dict)
