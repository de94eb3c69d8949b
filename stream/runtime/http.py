"""HTTP: ``/metrics`` (Prometheus text), ``/healthz`` (liveness) and ``/readyz`` (readiness).

Threads: the server runs on its own daemon thread (``seqsentry-http``) and one thread per
request; handlers only read the metrics registry and call the two probes, which read
plain values written by the consumer thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stream.errors import SeqsentryError


def serve(host: str, port: int, registry: CollectorRegistry, *, healthy: Callable[[], bool],
          ready: Callable[[], bool]) -> ThreadingHTTPServer:
    """Start serving on ``host:port`` (0: any free port) in a daemon thread; the server."""

    class Handler(BaseHTTPRequestHandler):
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
        server = ThreadingHTTPServer((host, port), Handler)
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
