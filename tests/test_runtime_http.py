"""The metrics/probe server: probes answer under slow and many clients, each request has a
total deadline, a crowd from one address cannot push out another's probe, and clients that
hang up early print nothing."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Gauge

from stream.runtime import http


def _serve(monkeypatch, **limits):
    for name, value in limits.items():
        monkeypatch.setattr(http, name, value)
    return http.serve("127.0.0.1", 0, CollectorRegistry(), healthy=lambda: True, ready=lambda: True)


def _address(server) -> tuple[str, int]:
    return server.server_address[:2]


def _probe(server, path: str = "/healthz", timeout: float = 1.0) -> bool:
    """One probe as Kubernetes makes it (1 s timeout): answered 200 in time?"""
    try:
        return urllib.request.urlopen(http.url(server) + path, timeout=timeout).status == 200
    except OSError:
        return False


@contextmanager
def _trickling_clients(server, n: int, every_s: float):
    """``n`` connections that each send one byte of a request head every ``every_s`` seconds
    (the slowloris of issue 20); yields the list of (socket, closed-by-server flag) pairs."""
    stop = threading.Event()
    socks = [socket.create_connection(_address(server)) for _ in range(n)]
    closed = [threading.Event() for _ in socks]

    def trickle(s: socket.socket, gone: threading.Event) -> None:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4000
        for byte in head:
            if stop.wait(every_s):
                return
            try:
                s.sendall(bytes([byte]))
            except OSError:
                gone.set()
                return

    threads = [threading.Thread(target=trickle, args=pair, daemon=True) for pair in zip(socks, closed, strict=True)]
    for t in threads:
        t.start()
    try:
        yield list(zip(socks, closed, strict=True))
    finally:
        stop.set()
        for s in socks:
            s.close()


def test_probes_answer_in_time_while_sixteen_clients_trickle_their_headers(monkeypatch):
    # issue 20, item 4: one header byte every 5 s from 16 clients failed 45 of 45 /healthz probes
    server = _serve(monkeypatch)
    try:
        with _trickling_clients(server, 16, every_s=0.5):
            time.sleep(0.5)
            answered = [_probe(server, path) for _ in range(10) for path in ("/healthz", "/readyz")]
        assert all(answered), f"{answered.count(False)} of {len(answered)} probes failed"
    finally:
        http.shutdown(server)


def test_probes_answer_when_more_clients_than_the_connection_cap_hold_connections(monkeypatch):
    server = _serve(monkeypatch, MAX_CONNECTIONS=8, REQUEST_DEADLINE_S=30.0)
    try:
        idle = [socket.create_connection(_address(server)) for _ in range(40)]  # 5x the cap, all silent
        time.sleep(0.3)
        assert all(_probe(server) for _ in range(10))
        assert server.open_connections <= 8
        for s in idle:
            s.close()
    finally:
        http.shutdown(server)


def test_connections_from_another_address_never_push_out_a_probe(monkeypatch):
    # the kubelet probes from its own address: a crowd from elsewhere loses its own oldest connections first
    server = _serve(monkeypatch, MAX_CONNECTIONS=8, REQUEST_DEADLINE_S=30.0)
    crowd = []
    try:
        with socket.create_connection(_address(server)) as probe:
            time.sleep(0.1)
            for _ in range(40):  # 5x the cap, all newer than the probe, from 127.0.0.2
                crowd.append(socket.create_connection(_address(server), source_address=("127.0.0.2", 0)))
            time.sleep(0.3)
            probe.settimeout(5)
            probe.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert probe.recv(100).startswith(b"HTTP/1.0 200")
    finally:
        for s in crowd:
            s.close()
        http.shutdown(server)


def test_a_request_has_a_total_deadline_however_its_bytes_trickle(monkeypatch):
    # a per-recv timeout never fires for a client that sends a byte every 0.1 s; a total deadline does
    server = _serve(monkeypatch, REQUEST_DEADLINE_S=1.0)
    try:
        t0 = time.monotonic()
        with _trickling_clients(server, 1, every_s=0.1) as [(_, closed)]:
            assert closed.wait(5), "the server never dropped the trickling client"
        assert time.monotonic() - t0 < 3
    finally:
        http.shutdown(server)


def test_a_client_that_sends_nothing_is_dropped_at_the_deadline(monkeypatch):
    server = _serve(monkeypatch, REQUEST_DEADLINE_S=0.5)
    try:
        with socket.create_connection(_address(server)) as idle:
            idle.settimeout(5)
            t0 = time.monotonic()
            assert idle.recv(1) == b""  # the server closed the connection
            assert time.monotonic() - t0 < 3
    finally:
        http.shutdown(server)


def test_a_request_head_past_the_size_limit_is_dropped_and_the_server_goes_on(monkeypatch):
    server = _serve(monkeypatch)
    try:
        with socket.create_connection(_address(server)) as s:
            s.settimeout(5)
            s.sendall(b"GET /healthz HTTP/1.0\r\nX: " + b"a" * (2 * http.MAX_HEAD_BYTES))
            assert s.recv(100) in (b"",)  # closed without an answer
        assert _probe(server)
    finally:
        http.shutdown(server)


def test_probes_metrics_and_unknown_paths_answer_as_before(monkeypatch):
    server = http.serve("127.0.0.1", 0, CollectorRegistry(), healthy=lambda: True, ready=lambda: False)
    try:
        assert _probe(server, "/healthz") and not _probe(server, "/readyz")
        with urllib.request.urlopen(http.url(server) + "/metrics?x=1", timeout=5) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        with socket.create_connection(_address(server)) as s:
            s.sendall(b"POST /healthz HTTP/1.0\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.0 405")
        with socket.create_connection(_address(server)) as s:
            s.sendall(b"GET /nope HTTP/1.0\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.0 404")
    finally:
        http.shutdown(server)


def test_a_large_metrics_answer_reaches_a_slow_reader_whole():
    registry = CollectorRegistry()
    series = Gauge("series", "many labelled series", ["i"], registry=registry)
    for i in range(20_000):  # ~400 KB of text: far more than a socket buffer
        series.labels(str(i)).set(i)
    server = http.serve("127.0.0.1", 0, registry, healthy=lambda: True, ready=lambda: True)
    try:
        with socket.create_connection(_address(server)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            got = b""
            while chunk := s.recv(4096):
                got += chunk
                time.sleep(0.0005)
        head, body = got.split(b"\r\n\r\n", 1)
        assert int(dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])[b"Content-Length"]) == len(body)
        assert body.count(b"series{") == 20_000
    finally:
        http.shutdown(server)


def test_a_client_that_hangs_up_early_prints_no_traceback(monkeypatch, capsys):
    server = _serve(monkeypatch)
    try:
        for _ in range(20):
            with socket.create_connection(_address(server)) as s:
                s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        time.sleep(0.3)
        assert _probe(server, "/readyz", timeout=5)
    finally:
        http.shutdown(server)
    assert "Traceback" not in capsys.readouterr().err
