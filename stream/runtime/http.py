"""HTTP: ``/metrics`` (Prometheus text), ``/healthz`` (liveness) and ``/readyz`` (readiness).

Threads: the server runs on its own daemon thread (``seqsentry-http``) and one thread per
connection, at most ``MAX_HANDLERS`` at once (further connections are closed at once, so
slow or idle clients cannot pile up threads); each connection times out after
``SOCKET_TIMEOUT_S``. Handlers only read the metrics registry and call the two probes,
which read plain values written by the consumer thread. A client that hangs up early
(a probe's timeout) is not an error: no traceback.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stream.errors import SeqsentryError

log = logging.getLogger(__name__)
MAX_HANDLERS = 16  # scrapes and probes are a few a second; more concurrent connections are a leak or an attack
SOCKET_TIMEOUT_S = 10.0  # a client that sends no request (or reads no answer) this long is dropped


class BoundedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with at most ``max_handlers`` handler threads, quiet about hang-ups."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 max_handlers: int | None = None) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_handlers or MAX_HANDLERS)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        """Hand the connection to a thread if one of the ``max_handlers`` slots is free; else close it."""
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away (or timed out) is normal for probes: one debug line, no traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            log.debug("http: client %s went away: %s", client_address, exc)
        else:
            log.warning("http: request from %s failed: %r", client_address, exc)


def serve(host: str, port: int, registry: CollectorRegistry, *, healthy: Callable[[], bool],
          ready: Callable[[], bool]) -> ThreadingHTTPServer:
    """Start serving on ``host:port`` (0: any free port) in a daemon thread; the server."""

    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_S  # socketserver sets it on each connection's socket

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?")[0]
            if path == "/metrics":
                body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
            elif path in ("/healthz", "/readyz"):
                ok = healthy() if path == "/healthz" else ready()
                body, ctype, code = (b"ok\n" if ok else b"not ok\n"), "text/plain", 200 if ok else 503
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # one line per scrape would drown the real logs
            pass

    try:
        server = BoundedHTTPServer((host, port), Handler)
    except OSError as exc:
        raise SeqsentryError(f"cannot serve metrics on {host}:{port} ({exc.strerror}); "
                             "choose another with --metrics-port") from None
    threading.Thread(target=server.serve_forever, name="seqsentry-http", daemon=True).start()
    return server


def url(server: ThreadingHTTPServer) -> str:
    """``http://host:port`` of a running server."""
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


def shutdown(server: ThreadingHTTPServer | None) -> None:
    """Stop serving and release the port."""
    if server is not None:
        server.shutdown()
        server.server_close()
