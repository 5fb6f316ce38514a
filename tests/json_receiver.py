"""A small HTTP server on a thread that answers JSON: the stand-in for a service the
homeserver calls in tests (an application service, a push gateway). Every request goes to
one function, which gets the method, path, query, headers and JSON body and returns the
status and the JSON body of the answer."""
from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from tests.server_harness import free_port


@dataclass
class Call:
    method: str
    path: str                 # percent-decoded, without the query
    query: dict[str, str]
    headers: Any              # the request's headers (an email.message.Message)
    body: Any                 # the parsed JSON body; None without a body; bytes if not JSON

    def bears(self, token: str) -> bool:
        """Whether the request carries `token` as its bearer token."""
        return self.headers.get("Authorization") == f"Bearer {token}"


Answer = Callable[[Call], tuple[int, Any]]


class JsonReceiver:
    def __init__(self, answer: Answer, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self._answer = answer
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "JsonReceiver":
        answer = self._answer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                path, _, qs = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                code, reply = answer(Call(self.command, urllib.parse.unquote(path),
                                          dict(urllib.parse.parse_qsl(qs)), self.headers, body))
                data = json.dumps(reply).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = _handle  # noqa: N815 - the stdlib's names

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
