"""A tiny HTTP/1.1 proxy on 127.0.0.1 in front of the S3 server, whose faults the test picks.

Every request the S3 client sends passes through :class:`FaultProxy`, which
asks its *policy* what to do with request number N:

``PASS``         forward it and relay the answer;
``DELAY``        wait ``seconds``, then forward it (a slow server);
``SLOW_ANSWER``  forward it, then wait ``seconds`` before answering (the write
                 happened; the client may time out and retry it);
``FAIL``         answer ``503 SlowDown`` without forwarding (a 5xx burst);
``DROP``         close the connection without forwarding (a reset);
``DROP_AFTER``   forward it, then close the connection without answering (the
                 write happened; the client never hears so).

It is a real component between two real ones, not a patch: the client speaks
HTTP to it, it speaks HTTP to moto.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

PASS: Final = "pass"
DELAY: Final = "delay"
SLOW_ANSWER: Final = "slow_answer"
FAIL: Final = "fail"
DROP: Final = "drop"
DROP_AFTER: Final = "drop_after"


@dataclass(frozen=True)
class Action:
    kind: str = PASS
    seconds: float = 0.0


Policy = Callable[[int, str, str], Action]
"""``policy(request_number, method, path) -> Action``."""

_ERROR_BODY: Final = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class _Closed(Exception):
    pass


class _Connection:
    """Buffered reads of HTTP messages from one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise _Closed
        self.buffer += chunk

    def read_until(self, marker: bytes) -> bytes:
        while (end := self.buffer.find(marker)) < 0:
            self._fill()
        end += len(marker)
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_head(self) -> tuple[bytes, dict[bytes, bytes], list[bytes]]:
        """Start line, headers (lower-case names) and the raw header lines."""
        head = self.read_until(b"\r\n\r\n")
        start, *lines = head[:-4].split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return start, headers, lines

    def read_rest(self) -> bytes:
        try:
            while True:
                self._fill()
        except _Closed:
            data, self.buffer = self.buffer, b""
            return data

    def read_body(
        self, headers: dict[bytes, bytes], *, bodiless: bool = False, response: bool = False
    ) -> bytes:
        if bodiless:
            return b""
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            raw = b""
            while True:
                size_line = self.read_until(b"\r\n")
                raw += size_line
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while (line := self.read_until(b"\r\n")) != b"\r\n":
                        raw += line
                    return raw + b"\r\n"
                raw += self.read_exactly(size + 2)
        if b"content-length" not in headers and response:
            return self.read_rest()  # the length is where the server closes
        return self.read_exactly(int(headers.get(b"content-length", b"0")))


class FaultProxy:
    """The proxy; ``endpoint`` is what the S3 client is pointed at."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.policy: Policy = lambda n, method, path: Action()
        self.counts: Counter[str] = Counter()
        self._number = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self, policy: Policy | None = None) -> None:
        """Number requests from 1 again, clear the counts, set the policy (default: pass)."""
        with self._lock:
            self._number = 0
            self.counts = Counter()
            self.policy = policy or (lambda n, method, path: Action())

    @property
    def faults(self) -> int:
        """Requests that met a fault since the last reset."""
        return self.counts["requests"] - self.counts[PASS]

    def _decide(self, method: str, path: str) -> Action:
        with self._lock:
            self._number += 1
            number = self._number
        action = self.policy(number, method, path)
        with self._lock:
            self.counts["requests"] += 1
            self.counts[action.kind] += 1
        return action

    def _serve(self, client: socket.socket) -> None:
        conn = _Connection(client)
        try:
            while True:
                start, headers, lines = conn.read_head()
                method, path, _version = start.decode("latin-1").split(" ", 2)
                if headers.get(b"expect", b"").lower() == b"100-continue":
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = conn.read_body(headers)
                action = self._decide(method, path)
                if action.kind == DROP:
                    return
                if action.kind == FAIL:
                    client.sendall(
                        b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                        + f"Content-Length: {len(_ERROR_BODY)}\r\n\r\n".encode()
                        + _ERROR_BODY
                    )
                    continue
                if action.kind == DELAY:
                    time.sleep(action.seconds)
                kept = [
                    line
                    for line in lines
                    if line.split(b":")[0].strip().lower() not in (b"expect", b"connection")
                ]
                request = b"\r\n".join([start, *kept, b"Connection: close", b"", b""]) + body
                answer = self._forward(request, bodiless=method == "HEAD")
                if action.kind == DROP_AFTER:
                    return
                if action.kind == SLOW_ANSWER:
                    time.sleep(action.seconds)
                client.sendall(answer)
        except (_Closed, OSError):
            return
        finally:
            client.close()

    def _forward(self, request: bytes, *, bodiless: bool) -> bytes:
        with socket.create_connection(self.upstream, timeout=60) as upstream:
            upstream.sendall(request)
            conn = _Connection(upstream)
            while True:
                start, headers, lines = conn.read_head()
                status = int(start.split(b" ", 2)[1])
                if status != 100:
                    break
            no_body = bodiless or status in (204, 304) or 100 <= status < 200
            body = conn.read_body(headers, bodiless=no_body, response=True)
            kept = [line for line in lines if not line.lower().startswith(b"connection:")]
            if (
                not no_body
                and b"content-length" not in headers
                and b"transfer-encoding" not in headers
            ):
                kept.append(f"Content-Length: {len(body)}".encode())
            return b"\r\n".join([start, *kept, b"", b""]) + body
