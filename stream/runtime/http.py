"""HTTP: ``/metrics`` (Prometheus text), ``/healthz`` (liveness) and ``/readyz`` (readiness).

One asyncio event loop on its own daemon thread (``seqsentry-http``) serves every
connection: a slow or idle client costs a coroutine, not a thread, so it cannot hold a
handler slot that a probe needs (issue 20: sixteen clients sending one header byte every
5 s held all sixteen threads of the earlier thread-per-connection server, and every
``/healthz`` probe failed). Each request has a *total* deadline,
``REQUEST_DEADLINE_S``, for reading the request and writing the answer - not a per-``recv``
timeout, which a client that trickles bytes resets forever. At most ``MAX_CONNECTIONS``
are open at once; a new connection beyond that closes the oldest connection of the client
address holding the most, instead of being turned away. So a probe (the kubelet holds one
or two connections, sends its request at once and is answered in well under a millisecond)
gets in however many connections other addresses hold or open, at any rate; only a flood
from the probe's own address can crowd it out. Requests are answered in HTTP/1.0 style (one
request per connection, ``Connection: close``).

Handlers only read the metrics registry and call the two probes, which read plain values
written by the consumer thread. A client that hangs up early (a probe's timeout) is not an
error: no traceback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stream.errors import SeqsentryError

log = logging.getLogger(__name__)
MAX_CONNECTIONS = 64  # scrapes and probes are a few a second; more at once is a leak or an attack
REQUEST_DEADLINE_S = 5.0  # whole request: read the head and write the answer, however the bytes trickle
MAX_HEAD_BYTES = 8192  # request line and headers; a GET needs a few hundred
# Connections the kernel queues until the loop accepts them. asyncio's default (100) overflows under a
# connection flood, and an overflowing queue drops a probe's SYN: its connect then waits the 1 s retransmit.
LISTEN_BACKLOG = 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
Answer = tuple[int, str, bytes]  # status, content type, body


def _route(path: str, registry: CollectorRegistry, healthy: Callable[[], bool], ready: Callable[[], bool]) -> Answer:
    """The answer to ``GET path``."""
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
    if path in ("/healthz", "/readyz"):
        ok = healthy() if path == "/healthz" else ready()
        return (200, "text/plain", b"ok\n") if ok else (503, "text/plain", b"not ok\n")
    return 404, "text/plain", b"not found\n"


def _response(status: int, ctype: str, body: bytes, head_only: bool = False) -> bytes:
    head = (f"HTTP/1.0 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + (b"" if head_only else body)


def _parse_request_line(head: bytes) -> tuple[str, str] | None:
    """(method, path without query) of a request head, or None when it is not HTTP."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return None
    return parts[0].decode("latin-1"), parts[1].decode("latin-1").split("?", 1)[0]


class ProbeServer:
    """The metrics and probe server: an asyncio server on a daemon thread (see the module docstring)."""

    def __init__(self, host: str, port: int, answer: Callable[[str], Answer],
                 max_connections: int | None = None, deadline_s: float | None = None) -> None:
        self.answer = answer
        self.max_connections = max_connections or MAX_CONNECTIONS
        self.deadline_s = deadline_s or REQUEST_DEADLINE_S
        self.loop = asyncio.new_event_loop()
        # open connections, oldest first (insertion order), with their client's address
        self._open: dict[asyncio.Task, tuple[asyncio.StreamWriter, str]] = {}
        try:  # bound here, on the caller's thread, so a port in use fails the caller at once
            self._server = self.loop.run_until_complete(
                asyncio.start_server(self._serve, host, port, limit=MAX_HEAD_BYTES, backlog=LISTEN_BACKLOG))
        except OSError:
            self.loop.close()
            raise
        self.server_address: tuple[str, int] = self._server.sockets[0].getsockname()[:2]
        self._thread = threading.Thread(target=self.loop.run_forever, name="seqsentry-http", daemon=True)
        self._thread.start()

    @property
    def open_connections(self) -> int:
        """Connections being served now (read from any thread: a snapshot)."""
        return len(self._open)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if len(self._open) >= self.max_connections:
            self._evict()
        self._open[task] = (writer, address)
        try:
            async with asyncio.timeout(self.deadline_s):
                await self._exchange(reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.CancelledError, OSError) as exc:
            log.debug("http: client %s dropped: %r", writer.get_extra_info("peername"), exc)
        except Exception as exc:  # a bug in a probe must not take the server down
            log.warning("http: request from %s failed: %r", writer.get_extra_info("peername"), exc)
        finally:
            self._open.pop(task, None)
            writer.transport.abort()  # answered: a no-op; dropped or past the deadline: discard what it never read

    def _evict(self) -> None:
        """Make room: close the oldest connection of the address that holds the most."""
        held = collections.Counter(address for _, address in self._open.values())
        greedy = held.most_common(1)[0][0]
        task = next(t for t, (_, address) in self._open.items() if address == greedy)
        self._open.pop(task)[0].transport.abort()
        task.cancel()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one request head, write its answer."""
        head = await reader.readuntil(b"\r\n\r\n")
        request = _parse_request_line(head)
        if request is None:
            writer.write(_response(400, "text/plain", b"bad request\n"))
        elif request[0] not in ("GET", "HEAD"):
            writer.write(_response(405, "text/plain", b"only GET\n"))
        else:
            writer.write(_response(*self.answer(request[1]), head_only=request[0] == "HEAD"))
        writer.close()  # sends what is buffered first (a large /metrics answer), then closes
        await writer.wait_closed()

    def shutdown(self) -> None:
        """Stop serving, drop open connections and release the port."""
        async def stop() -> None:
            self._server.close()
            tasks = list(self._open)
            for task, (writer, _) in list(self._open.items()):
                writer.transport.abort()
                task.cancel()
            with contextlib.suppress(Exception):  # let each end before the loop stops, within reason
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2.0)
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

        if self.loop.is_closed():
            return
        with contextlib.suppress(Exception):  # a loop busy with a flood of connections: stop it regardless
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():  # a loop still running cannot be closed; its daemon thread ends with us
            self.loop.close()


def serve(host: str, port: int, registry: CollectorRegistry, *, healthy: Callable[[], bool],
          ready: Callable[[], bool]) -> ProbeServer:
    """Start serving on ``host:port`` (0: any free port) on a daemon thread; the server."""
    try:
        return ProbeServer(host, port, lambda path: _route(path, registry, healthy, ready))
    except OSError as exc:
        raise SeqsentryError(f"cannot serve metrics on {host}:{port} ({exc.strerror}); "
                             "choose another with --metrics-port") from None


def url(server: ProbeServer) -> str:
    """``http://host:port`` of a running server."""
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


def shutdown(server: ProbeServer | None) -> None:
    """Stop serving and release the port."""
    if server is not None:
        server.shutdown()
