"""A fault-injecting HTTP proxy for tests and benchmarks, on 127.0.0.1 only.

It sits between the ingester and an S3 endpoint (a moto server) and forwards every
request, adding a configurable delay and injecting faults into the object GETs that
match a rule: a 503 ``SlowDown``, a 500 ``InternalError``, a connection reset in the
middle of the body, or a well-formed but truncated body. A rule fires for the first
``count`` matching requests, or for a seeded ``share`` of them, so a test knows exactly
how many faults it caused (:attr:`FaultRule.fired`).

:class:`TcpRelay` is the same idea one layer down: a plain TCP forwarder that can be
switched off and on, to make a database (a catalog) unreachable for a while.

Nothing here is used by a production run. Run it on its own with
``python -m bifrost_async.faultproxy --upstream http://127.0.0.1:5000 --delay 0.02``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import logging
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, cast
from urllib.parse import urlsplit

__all__ = ["FaultKind", "FaultProxy", "FaultRule", "TcpRelay", "run_fault_proxy"]

logger = logging.getLogger(__name__)

FaultKind = Literal["slowdown", "internal", "reset", "truncate", "delay"]

_KINDS = "slowdown, internal, reset, truncate, delay"
_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error."),
}
# Headers that describe the upstream connection or body, not the message itself.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "proxy-connection",
    }
)


@dataclass
class FaultRule:
    """Inject one kind of fault into matching object GETs.

    A request matches when it is a GET of an object (not a listing) whose path matches
    ``path`` (a regular expression, searched). It is then faulted while fewer than
    ``count`` faults were injected, or, with ``share``, with that probability drawn
    from a generator seeded with ``seed``. ``count=None`` and ``share=None`` fault
    every match (a persistent fault). ``delay`` is the extra wait of a ``delay`` rule.
    """

    kind: FaultKind
    path: str = ""
    count: int | None = None
    share: float | None = None
    seed: int = 0
    delay: float = 0.0
    fired: int = 0
    matched: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("slowdown", "internal", "reset", "truncate", "delay"):
            raise ValueError(f"fault kind {self.kind!r} is not one of {_KINDS}")

        self._rng = random.Random(self.seed)
        self._pattern = re.compile(self.path)

    def decide(self, method: str, target: str) -> bool:
        """Count a request and tell whether this rule faults it (call under a lock)."""
        if method != "GET" or not is_object_request(target):
            return False

        if not self._pattern.search(urlsplit(target).path):
            return False

        self.matched += 1
        if self.count is not None and self.fired >= self.count:
            return False

        if self.share is not None and self._rng.random() >= self.share:
            return False

        self.fired += 1
        return True


def is_object_request(target: str) -> bool:
    """Whether a path-style request target names an object (bucket and key)."""
    parts = urlsplit(target)
    query = parts.query
    if "list-type" in query or "uploads" in query or "location" in query:
        return False

    return len([p for p in parts.path.split("/") if p]) >= 2


class FaultProxy:
    """A threaded HTTP/1.1 proxy to one upstream, with a delay and fault rules.

    Use it as a context manager (or :func:`run_fault_proxy`); :attr:`url` is the
    endpoint to give the client. Rules may be replaced while it runs
    (:meth:`set_rules`); :attr:`requests` counts every forwarded request.
    """

    def __init__(
        self,
        upstream: str,
        rules: Sequence[FaultRule] = (),
        delay: float = 0.0,
        port: int = 0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"upstream {upstream!r} is not on the loopback interface")

        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.delay = delay
        self.rules = list(rules)
        self.requests = 0
        self.lock = threading.Lock()
        self.local = threading.local()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self.handler_class())
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The proxy's endpoint URL."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def set_rules(self, rules: Sequence[FaultRule]) -> None:
        """Replace the fault rules."""
        with self.lock:
            self.rules = list(rules)

    def choose(self, method: str, target: str) -> FaultRule | None:
        """The first rule that faults this request, counting it in every rule."""
        with self.lock:
            self.requests += 1
            chosen = None
            for rule in self.rules:
                if rule.decide(method, target) and chosen is None:
                    chosen = rule

            return chosen

    def start(self) -> FaultProxy:
        """Serve in a daemon thread."""
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="fault-proxy", daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def upstream(self) -> http.client.HTTPConnection:
        """This thread's connection to the upstream (kept alive between requests)."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(
                self.upstream_host, self.upstream_port, timeout=60
            )
            self.local.conn = conn

        return conn

    def forward(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Send one request upstream and read the whole response."""
        for attempt in range(2):
            conn = self.upstream()
            try:
                conn.putrequest(
                    method, target, skip_host=True, skip_accept_encoding=True
                )
                for name, value in headers:
                    conn.putheader(name, value)

                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body if body else None)
                response = conn.getresponse()
                data = response.read()
                return response.status, response.reason, response.getheaders(), data
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise

        raise AssertionError("unreachable")

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        """The request handler bound to this proxy."""
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002  # the stdlib's name
                logger.debug("proxy.request %s", format % args)

            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rule = proxy.choose(self.command, self.path)
                if proxy.delay:
                    time.sleep(proxy.delay)

                if rule is not None and rule.kind in _ERRORS:
                    self.send_error_body(*_ERRORS[rule.kind])
                    return

                if rule is not None and rule.kind == "delay":
                    time.sleep(rule.delay)

                headers = [
                    (k, v)
                    for k, v in self.headers.items()
                    if k.lower() not in _HOP_HEADERS and k.lower() != "expect"
                ]
                try:
                    status, reason, out_headers, data = proxy.forward(
                        self.command, self.path, headers, body
                    )
                except (http.client.HTTPException, OSError):
                    self.send_error_body(502, "BadGateway", "upstream unreachable")
                    return

                if rule is not None and rule.kind == "reset" and len(data) > 1:
                    self.send_reset(status, reason, out_headers, data)
                    return

                if rule is not None and rule.kind == "truncate" and len(data) > 1:
                    data = data[: len(data) // 2]

                self.send_response_only(status, reason)
                for name, value in out_headers:
                    if name.lower() not in _HOP_HEADERS:
                        self.send_header(name, value)

                length = len(data)
                if self.command == "HEAD":
                    # A HEAD answer has no body but the length of the one a GET gets.
                    upstream = {k.lower(): v for k, v in out_headers}
                    length = int(upstream.get("content-length") or 0)

                self.send_header("Content-Length", str(length))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def send_error_body(self, status: int, code: str, message: str) -> None:
                payload = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{code}</Code><Message>{message}</Message>"
                    "<RequestId>faultproxy</RequestId></Error>"
                ).encode()
                self.send_response_only(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def send_reset(
                self,
                status: int,
                reason: str,
                out_headers: list[tuple[str, str]],
                data: bytes,
            ) -> None:
                """Promise the whole body, send half of it, then reset."""
                self.send_response_only(status, reason)
                for name, value in out_headers:
                    if name.lower() not in _HOP_HEADERS:
                        self.send_header(name, value)

                length = len(data)
                if self.command == "HEAD":
                    # A HEAD answer has no body but the length of the one a GET gets.
                    upstream = {k.lower(): v for k, v in out_headers}
                    length = int(upstream.get("content-length") or 0)

                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                # SO_LINGER with a zero timeout makes close() send a RST, not a FIN.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

        return Handler


@contextlib.contextmanager
def run_fault_proxy(
    upstream: str, rules: Sequence[FaultRule] = (), delay: float = 0.0
) -> Iterator[FaultProxy]:
    """Run a :class:`FaultProxy` for the duration of the context."""
    with FaultProxy(upstream, rules, delay) as proxy:
        yield proxy


class TcpRelay:
    """A TCP forwarder on 127.0.0.1 that can be switched off (refusing connections).

    While it is down, new connections are refused and open ones are cut, the way a
    database that went away looks to its clients.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = find_port()
        self.is_up = threading.Event()
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.listener: socket.socket | None = None
        self.thread: threading.Thread | None = None

    def up(self) -> None:
        """Start accepting connections."""
        with self.lock:
            if self.listener is not None:
                return

            listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
            self.listener = listener
            self.is_up.set()

        self.thread = threading.Thread(
            target=self.accept, args=(listener,), daemon=True
        )
        self.thread.start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        with self.lock:
            listener, self.listener = self.listener, None
            self.is_up.clear()
            sockets, self.open = self.open, set()

        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

        if self.thread is not None:
            self.thread.join(timeout=5)

    def accept(self, listener: socket.socket) -> None:
        """Accept connections until the listener is closed."""
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return

            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue

            server.settimeout(None)
            with self.lock:
                if not self.is_up.is_set():
                    client.close()
                    server.close()
                    continue

                self.open |= {client, server}

            for source, sink in ((client, server), (server, client)):
                threading.Thread(
                    target=self.pump, args=(source, sink), daemon=True
                ).start()

    def pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy bytes one way until either side closes."""
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> TcpRelay:
        self.up()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.down()


def find_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    """Run the proxy in the foreground until interrupted."""
    parser = argparse.ArgumentParser(
        description="A fault-injecting proxy for S3 tests."
    )
    parser.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--port", type=int, default=0, help="port to listen on")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per request")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        help="KIND[:SHARE], KIND slowdown, internal, reset or truncate (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for shares")
    args = parser.parse_args()
    rules = []
    for spec in args.fault:
        kind, _, share = spec.partition(":")
        share_value = float(share) if share else None
        rules.append(
            FaultRule(cast(FaultKind, kind), share=share_value, seed=args.seed)
        )

    with FaultProxy(args.upstream, rules, args.delay, args.port) as proxy:
        print(proxy.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
