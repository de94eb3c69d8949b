"""Kafka clients: configuration pass-through, producers and consumers with seqsentry's defaults.

Any librdkafka setting (``security.protocol``, ``sasl.*``, ``ssl.*``, ...) given by the
user is passed through unchanged, so every tool runs against real, secured clusters.

Secrets stay out of ``ps`` and out of every message: a secret setting's value may be
``@/path/to/file`` (read when a client is built, e.g. ``-X sasl.password=@/run/secrets/kafka``),
``SEQSENTRY_KAFKA_SASL_PASSWORD`` supplies ``sasl.password`` from the environment, and no
error names a secret's value (a malformed ``-X`` option is not echoed; librdkafka's
complaints are scrubbed of secret values).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from stream.errors import SeqsentryError
from stream.ratelimit import RateLimitFilter

T = TypeVar("T")

log = logging.getLogger(__name__)

SECRET_KEYS = ("password", "secret", "key.pem", "token", "jaas")
PASSWORD_ENV = "SEQSENTRY_KAFKA_SASL_PASSWORD"  # sasl.password from the environment (a -X setting wins)
# Group joins against small brokers take ~20 s with librdkafka's defaults; these keep
# them to a few seconds without being unsafe on real clusters.
CONSUMER_DEFAULTS = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    # Kafka's own default. Kafka answers a fetch as soon as data is there, so this costs no
    # latency there. The embedded Tansu broker holds every fetch for the full wait, yet a
    # short wait starves on it: its in-memory fetch slows with every stored batch, and once
    # that exceeds the wait it answers with no records, for good (10 ms: from ~15k batches a
    # partition; 100 ms: by 150k; 500 ms still served at 150k). That stalled the soak.
    "fetch.wait.max.ms": 500,
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "socket.timeout.ms": 10_000,  # notice a hung broker in seconds, not a minute
}
PRODUCER_DEFAULTS = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
}


class KafkaUnavailable(SeqsentryError):
    """The cluster could not be reached; the message says which address and what to check."""


def parse_options(items: Iterable[str]) -> dict[str, str]:
    """``["security.protocol=SASL_SSL", ...]`` -> dict (the -X flags).

    A malformed option is named by its position, never by its text: it may be a password
    typed without its key.
    """
    out = {}
    for n, item in enumerate(items, 1):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"-X option #{n} must look like key=value, e.g. security.protocol=SASL_SSL "
                             "(its text is not shown: it may hold a secret)")
        out[key.strip()] = value
    return out


def is_secret(key: str) -> bool:
    """Whether a setting's value is a secret (never logged, never echoed)."""
    return any(s in key.lower() for s in SECRET_KEYS)


def redact(config: Mapping[str, object]) -> dict[str, object]:
    """A copy of a client config safe to log: secret values replaced."""
    return {k: ("***" if is_secret(k) else v) for k, v in config.items()}


def resolve_secrets(options: Mapping[str, object]) -> dict[str, object]:
    """``options`` with secrets filled in: ``@FILE`` values of secret settings read from their
    files (one trailing newline dropped), and ``sasl.password`` from ``SEQSENTRY_KAFKA_SASL_PASSWORD``
    when no setting gives one. An unreadable file is one ``ValueError`` naming the setting and path."""
    out = dict(options)
    if "sasl.password" not in out and os.environ.get(PASSWORD_ENV):
        out["sasl.password"] = os.environ[PASSWORD_ENV]
    for key, value in out.items():
        if is_secret(key) and isinstance(value, str) and value.startswith("@"):
            path = value[1:]
            try:
                with open(path) as f:
                    secret = f.read()
            except OSError as exc:
                raise ValueError(f"-X {key}=@{path}: cannot read the secret file ({exc.strerror})") from None
            out[key] = secret[:-1] if secret.endswith("\n") else secret
    return out


def _scrub(text: str, config: Mapping[str, object]) -> str:
    for key, value in config.items():  # a number is a secret too when its setting is (sasl.password: 12345678)
        shown = str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else ""
        if is_secret(key) and shown:
            text = text.replace(shown, "***")
    return text


def _build(cls: Callable[[dict], T], config: dict) -> T:
    """A librdkafka client; a setting it refuses is one ``ValueError`` without any secret value."""
    try:
        return cls(config)
    except (KafkaException, ValueError, TypeError) as exc:
        err = exc.args[0] if exc.args else exc
        text = _scrub(err.str() if isinstance(err, KafkaError) else str(err), config)
        hint = ""
        if "sasl.jaas.config" in config:
            hint = ("; sasl.jaas.config is a Java client setting: give -X sasl.mechanism=..., -X sasl.username=... "
                    "and -X sasl.password=@/path/to/secret instead")
        raise ValueError(f"invalid Kafka settings: {text}{hint}") from None


_RDKAFKA_LOG = logging.getLogger("rdkafka")
# while a broker is down librdkafka repeats each connection failure many times a second
_RDKAFKA_LOG.addFilter(RateLimitFilter())


def client_config(bootstrap: str, options: Mapping[str, str] | None = None, **defaults: object) -> dict:
    """Defaults, then the user's pass-through options (which win), then bootstrap servers.

    librdkafka's own log lines go through Python logging ("rdkafka" logger) instead of
    straight to stderr, so they follow --log-level/--log-format.
    """
    return {"logger": _RDKAFKA_LOG, **defaults, **resolve_secrets(options or {}), "bootstrap.servers": bootstrap}


def producer(bootstrap: str, options: Mapping[str, str] | None = None, **overrides: object) -> Producer:
    """An idempotent producer."""
    return _build(Producer, client_config(bootstrap, options, **{**PRODUCER_DEFAULTS, **overrides}))


def consumer(bootstrap: str, group: str, options: Mapping[str, str] | None = None, **overrides: object) -> Consumer:
    """A consumer that never auto-commits (offsets are committed explicitly, after the work)."""
    return _build(Consumer, client_config(bootstrap, options, **{**CONSUMER_DEFAULTS, "group.id": group, **overrides}))


def check_reachable(bootstrap: str, options: Mapping[str, str] | None = None, timeout: float = 10.0) -> dict:
    """Topic metadata of the cluster; raise :class:`KafkaUnavailable` with a clear message if unreachable.

    A rejected login (SASL) or TLS handshake is named as such: librdkafka reports it only
    through the error callback, while the metadata call itself fails as "transport failure".
    """
    errors: list[KafkaError] = []
    # the probe's own connection-failure log lines would only repeat the message raised below
    quiet = {} if _RDKAFKA_LOG.isEnabledFor(logging.DEBUG) else {"log_level": 0}
    admin = _build(AdminClient, client_config(bootstrap, options, error_cb=errors.append, **quiet))
    try:
        return admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        admin.poll(0)
        denied = [e for e in errors if e.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL)]
        if denied:
            raise KafkaUnavailable(
                f"Kafka at {bootstrap} refused the connection's security: {denied[-1].str()}; "
                "check the -X sasl.*/ssl.* settings (security.protocol, sasl.mechanism, username, password)"
            ) from None
        raise KafkaUnavailable(
            f"cannot reach Kafka at {bootstrap} within {timeout:.0f}s ({exc.args[0].str() if exc.args else exc}); "
            "check --bootstrap and the -X security settings"
        ) from None


def wait_for_topics(bootstrap: str, topics: Iterable[str], options: Mapping[str, str] | None = None, *,
                    timeout: float = 60.0, attempt_timeout: float = 5.0, first_delay: float = 0.5, max_delay: float = 10.0,
                    sleep: Callable[[float], None] = time.sleep) -> dict:
    """Cluster metadata once the cluster answers and ``topics`` exist, retrying with exponential backoff.

    At start-up the broker may still be booting or a topics job still running (compose,
    Kubernetes); a detector that exits at once just gets restarted in a loop by its
    supervisor. Each failed attempt is logged with the next delay; after ``timeout``
    seconds the last problem is raised as :class:`KafkaUnavailable`, naming the attempts.
    """
    wanted = list(topics)
    deadline = time.monotonic() + timeout
    delay, attempt = first_delay, 0
    while True:
        attempt += 1
        left = deadline - time.monotonic()
        try:
            found = check_reachable(bootstrap, options, timeout=max(1.0, min(attempt_timeout, left / 2)))
            missing = [t for t in wanted if t not in found]
            if not missing:
                return found
            problem: KafkaUnavailable = KafkaUnavailable(
                f"topic {missing[0]!r} does not exist on {bootstrap}; create it first "
                f"(the embedded broker: `seqsentry broker --topic {missing[0]}`)")
        except KafkaUnavailable as exc:
            problem = exc
        left = deadline - time.monotonic()
        if left <= 0:
            raise KafkaUnavailable(f"{problem} (gave up after {attempt} attempts in {timeout:.0f}s)") from None
        wait = min(delay, left)
        log.warning("start-up: %s; retrying in %.1fs (attempt %d)", problem, wait, attempt)
        sleep(wait)
        delay = min(delay * 2, max_delay)


def require_topic(bootstrap: str, topic: str, options: Mapping[str, str] | None = None) -> int:
    """Number of partitions of ``topic``; a clear error if it does not exist."""
    topics = check_reachable(bootstrap, options)
    if topic not in topics:
        raise KafkaUnavailable(
            f"topic {topic!r} does not exist on {bootstrap}; create it (e.g. `seqsentry topics create {topic} -b {bootstrap}`) "
            "or pick another with --topic"
        )
    return len(topics[topic].partitions)
