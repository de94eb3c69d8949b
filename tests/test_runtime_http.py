"""The metrics/probe server: bounded threads, socket timeouts, quiet about clients that hang up."""

from __future__ import annotations

import socket
import time
import urllib.request

from prometheus_client import CollectorRegistry

from stream.runtime import http


def _serve(monkeypatch, **limits):
    for name, value in limits.items():
        monkeypatch.setattr(http, name, value)
    return http.serve("127.0.0.1", 0, CollectorRegistry(), healthy=lambda: True, ready=lambda: True)


def _address(server) -> tuple[str, int]:
    return server.server_address[:2]


def test_a_client_that_sends_nothing_is_dropped_after_the_socket_timeout(monkeypatch):
    server = _serve(monkeypatch, SOCKET_TIMEOUT_S=0.5)
    try:
        with socket.create_connection(_address(server)) as idle:
            idle.settimeout(5)
            t0 = time.monotonic()
            assert idle.recv(1) == b""  # the server closed the connection
            assert time.monotonic() - t0 < 3
    finally:
        http.shutdown(server)


def test_slow_clients_beyond_the_cap_are_turned_away_and_probes_work_again_once_they_leave(monkeypatch):
    server = _serve(monkeypatch, SOCKET_TIMEOUT_S=30.0, MAX_HANDLERS=2)
    try:
        idle = [socket.create_connection(_address(server)) for _ in range(2)]  # hold both handler threads
        time.sleep(0.2)
        with socket.create_connection(_address(server)) as third:
            third.settimeout(5)
            third.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert third.recv(100) == b""  # closed at once: no thread for it
        for s in idle:
            s.close()
        time.sleep(0.2)
        assert urllib.request.urlopen(http.url(server) + "/healthz", timeout=5).status == 200
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
        assert urllib.request.urlopen(http.url(server) + "/readyz", timeout=5).status == 200
    finally:
        http.shutdown(server)
    assert "Traceback" not in capsys.readouterr().err
