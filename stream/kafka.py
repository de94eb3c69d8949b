"""Kafka clients: configuration pass-through, producers and consumers with seqsentry's defaults.

Any librdkafka setting (``security.protocol``, ``sasl.*``, ``ssl.*``, ...) given by the
user is passed through unchanged, so every tool runs against real, secured clusters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from stream.errors import SeqsentryError

log = logging.getLogger(__name__)

SECRET_KEYS = ("password", "secret", "key.pem", "token", "jaas")
# Group joins against small brokers take ~20 s with librdkafka's defaults; these keep
# them to a few seconds without being unsafe on real clusters.
CONSUMER_DEFAULTS = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "fetch.wait.max.ms": 50,
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
    """``["security.protocol=SASL_SSL", ...]`` -> dict (the -X flags)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"Kafka option {item!r} must look like key=value, e.g. security.protocol=SASL_SSL")
        out[key.strip()] = value
    return out


def redact(config: Mapping[str, object]) -> dict[str, object]:
    """A copy of a client config safe to log: secret values replaced."""
    return {k: ("***" if any(s in k.lower() for s in SECRET_KEYS) else v) for k, v in config.items()}


_RDKAFKA_LOG = logging.getLogger("rdkafka")


def client_config(bootstrap: str, options: Mapping[str, str] | None = None, **defaults: object) -> dict:
    """Defaults, then the user's pass-through options (which win), then bootstrap servers.

    librdkafka's own log lines go through Python logging ("rdkafka" logger) instead of
    straight to stderr, so they follow --log-level/--log-format.
    """
    return {"logger": _RDKAFKA_LOG, **defaults, **(options or {}), "bootstrap.servers": bootstrap}


def producer(bootstrap: str, options: Mapping[str, str] | None = None, **overrides: object) -> Producer:
    """An idempotent producer."""
    return Producer(client_config(bootstrap, options, **{**PRODUCER_DEFAULTS, **overrides}))


def consumer(bootstrap: str, group: str, options: Mapping[str, str] | None = None, **overrides: object) -> Consumer:
    """A consumer that never auto-commits (offsets are committed explicitly, after the work)."""
    return Consumer(client_config(bootstrap, options, **{**CONSUMER_DEFAULTS, "group.id": group, **overrides}))


def check_reachable(bootstrap: str, options: Mapping[str, str] | None = None, timeout: float = 10.0) -> dict:
    """Topic metadata of the cluster; raise :class:`KafkaUnavailable` with a clear message if unreachable."""
    admin = AdminClient(client_config(bootstrap, options))
    try:
        return admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise KafkaUnavailable(
            f"cannot reach Kafka at {bootstrap} within {timeout:.0f}s ({exc.args[0].str() if exc.args else exc}); "
            "check --bootstrap and the -X security settings"
        ) from None


def require_topic(bootstrap: str, topic: str, options: Mapping[str, str] | None = None) -> int:
    """Number of partitions of ``topic``; a clear error if it does not exist."""
    topics = check_reachable(bootstrap, options)
    if topic not in topics:
        raise KafkaUnavailable(
            f"topic {topic!r} does not exist on {bootstrap}; create it (e.g. `seqsentry topics create {topic}`) "
            "or pick another with --topic"
        )
    return len(topics[topic].partitions)
